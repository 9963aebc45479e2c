"""The OpenAI provider against a real HTTP server speaking the chat completions protocol."""

from __future__ import annotations

import asyncio

import pytest

from aimesh_common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from aimesh_llm_router.citations import Source
from aimesh_llm_router.providers import OpenAIProvider, ProviderContext
from aimesh_llm_router.providers.base import (
    AnswerTask,
    Delta,
    GenerateTask,
    Message,
    SummarizeTask,
)
from aimesh_llm_router.providers.chat import MAX_CHARS_PER_TOKEN
from aimesh_llm_router.templates import load_prompt_library
from aimesh_llm_router.upstream import retry_after
from tests.conftest import free_port
from tests.llm_router.conftest import TEST_KEY, openai_settings
from tests.llm_router.openai_server import FakeOpenAI, Reply

USAGE = {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}


def provider_for(base_url: str, **overrides: object) -> OpenAIProvider:
    settings = openai_settings(base_url, **overrides)
    return OpenAIProvider.from_context(
        ProviderContext(settings=settings, prompts=load_prompt_library(), embedding=None)
    )


@pytest.fixture
def provider(fake_openai: FakeOpenAI) -> OpenAIProvider:
    return provider_for(fake_openai.base_url)


async def collect(provider: OpenAIProvider, task: GenerateTask) -> list[Delta]:
    return [delta async for delta in provider.generate(task)]


async def test_summarize_sends_the_rendered_template(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content=" A short summary. ", usage=USAGE))
    text = "The quick brown fox {jumps} over the lazy dog."
    result = await provider.summarize(
        SummarizeTask(text=text, style="bullets", max_words=0, max_tokens=300)
    )
    assert result.text == "A short summary."
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (42, 7)
    assert result.usage.estimated is False
    sent = fake_openai.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert sent.body["model"] == "test-model"
    assert sent.body.get("max_completion_tokens", sent.body.get("max_tokens")) == 300
    system, human = sent.messages
    assert system["role"] == "system"
    assert "careful summarizer" in system["content"]
    assert human["role"] == "user"
    assert text in human["content"]
    assert "one line per key point" in human["content"]
    assert "at most 100 words" in human["content"]


async def test_answer_sends_numbered_sources(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="Rome is in Italy [2].", usage=USAGE))
    task = AnswerTask(
        question="Where is Rome?",
        sources=[Source(1, "Paris is in France."), Source(2, "Rome is in Italy.")],
        max_tokens=100,
    )
    result = await provider.answer(task)
    assert result.text == "Rome is in Italy [2]."
    system, human = fake_openai.requests[-1].messages
    assert "only the numbered sources" in system["content"]
    assert "[1] Paris is in France.\n\n[2] Rome is in Italy." in human["content"]
    assert "Question: Where is Rome?" in human["content"]


async def test_usage_is_estimated_when_the_server_reports_none(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="Two words.", usage=None, finish_reason="length"))
    result = await provider.summarize(
        SummarizeTask(text="Some text here.", style="brief", max_words=10, max_tokens=5)
    )
    assert result.usage.estimated is True
    assert result.usage.completion_tokens == 3
    assert result.usage.prompt_tokens > 50  # the whole rendered prompt, system included
    assert result.finish_reason == "length"


async def test_generate_streams_deltas_then_finish_and_usage(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="Hello there, pirate friend!", usage=USAGE))
    task = GenerateTask(
        messages=[
            Message("system", "Talk like a pirate."),
            Message("user", "Hi"),
            Message("assistant", "Ahoy."),
            Message("user", "Greet me again"),
        ],
        max_tokens=50,
        temperature=0.2,
    )
    deltas = await collect(provider, task)
    assert [d.text for d in deltas[:-1]] == ["Hello ", "there, ", "pirate ", "friend!"]
    assert all(d.finish_reason is None for d in deltas[:-1])
    last = deltas[-1]
    assert last.text == ""
    assert last.finish_reason == "stop"
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.estimated) == (
        42,
        7,
        False,
    )
    sent = fake_openai.requests[-1]
    assert sent.body["stream"] is True
    assert sent.body["temperature"] == pytest.approx(0.2)
    roles = [(m["role"], m["content"]) for m in sent.messages]
    # The router's system prompt comes first; the client's stays an ordinary message after it.
    assert roles[0][0] == "system"
    assert "served by aimesh" in roles[0][1]
    assert roles[1:] == [
        ("system", "Talk like a pirate."),
        ("user", "Hi"),
        ("assistant", "Ahoy."),
        ("user", "Greet me again"),
    ]


async def test_generate_reports_length_and_estimates_missing_usage(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="cut off here", usage=None, finish_reason="length"))
    deltas = await collect(
        provider, GenerateTask(messages=[Message("user", "Hi")], max_tokens=3, temperature=None)
    )
    assert "".join(d.text for d in deltas) == "cut off here"
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage is not None
    assert deltas[-1].usage.estimated is True
    assert deltas[-1].usage.completion_tokens == 3
    assert "temperature" not in fake_openai.requests[-1].body


async def test_a_reply_far_longer_than_max_tokens_is_cut_and_its_stream_closed(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    """An upstream that ignores max_tokens (here 4.8 MB for 4 tokens) is not passed on: the
    reply stops at MAX_CHARS_PER_TOKEN characters a token with finish_reason length, and
    the router hangs up instead of reading the rest."""
    fake_openai.enqueue(Reply(content="lorem ipsum " * 400_000, chunk_size=4096))
    deltas = await collect(
        provider, GenerateTask(messages=[Message("user", "Hi")], max_tokens=4, temperature=None)
    )
    assert "".join(d.text for d in deltas) == ("lorem ipsum " * 400_000)[: 4 * MAX_CHARS_PER_TOKEN]
    assert deltas[-1].finish_reason == "length"
    for _ in range(100):
        if fake_openai.disconnects:
            break
        await asyncio.sleep(0.02)
    assert fake_openai.disconnects == 1


SUMMARY = SummarizeTask(text="Some text.", style="brief", max_words=0, max_tokens=10)


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (
            Reply(
                status=400,
                error={
                    "message": "This model's maximum context length is 8192 tokens.",
                    "code": "context_length_exceeded",
                },
            ),
            InvalidArgument,
            "maximum context length is 8192 tokens",
        ),
        (
            Reply(status=422, error={"message": "max_tokens too large"}),
            InvalidArgument,
            "too large",
        ),
        (
            Reply(status=401, error={"message": f"Incorrect API key provided: {TEST_KEY}"}),
            FailedPrecondition,
            "provider rejected the configured credentials",
        ),
        (Reply(status=403), FailedPrecondition, "provider rejected the configured credentials"),
        (
            Reply(status=404, error={"message": "The model `test-model` does not exist"}),
            FailedPrecondition,
            "does not exist",
        ),
        (Reply(status=429, error={"message": "Rate limit reached"}), ResourceExhausted, "retry"),
        (Reply(status=500), Unavailable, r"HTTP 500"),
        (Reply(status=503), Unavailable, r"HTTP 503"),
    ],
)
async def test_upstream_errors_are_mapped(
    provider: OpenAIProvider,
    fake_openai: FakeOpenAI,
    reply: Reply,
    error: type[Exception],
    message: str,
) -> None:
    fake_openai.enqueue(reply)
    with pytest.raises(error, match=message) as raised:
        await provider.summarize(SUMMARY)
    assert TEST_KEY not in str(raised.value)


async def test_a_key_in_an_upstream_reason_is_scrubbed(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(status=400, error={"message": f"bad request for key {TEST_KEY}"}))
    with pytest.raises(InvalidArgument) as raised:
        await provider.summarize(SUMMARY)
    assert TEST_KEY not in raised.value.message
    assert "bad request for key ***" in raised.value.message


async def test_streaming_errors_are_mapped(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(status=429))
    with pytest.raises(ResourceExhausted):
        await collect(
            provider, GenerateTask(messages=[Message("user", "Hi")], max_tokens=5, temperature=None)
        )


async def test_one_attempt_per_call_and_retry_after_is_passed_on(fake_openai: FakeOpenAI) -> None:
    """Retries belong to the router's resilience layer; the provider reports the wait."""
    provider = provider_for(fake_openai.base_url, openai_max_retries=2)
    fake_openai.enqueue(Reply(status=429, headers={"retry-after": "7"}))
    with pytest.raises(ResourceExhausted) as caught:
        await provider.summarize(SUMMARY)
    assert retry_after(caught.value) == 7.0
    assert len(fake_openai.requests) == 1


async def test_malformed_json_is_unavailable(fake_openai: FakeOpenAI) -> None:
    provider = provider_for(fake_openai.base_url)
    fake_openai.enqueue(Reply(raw='{"choices": [{"message": '))
    with pytest.raises(Unavailable, match="malformed"):
        await provider.summarize(SUMMARY)


async def test_timeout_is_deadline_exceeded(fake_openai: FakeOpenAI) -> None:
    provider = provider_for(fake_openai.base_url, request_timeout_seconds=0.3)
    fake_openai.enqueue(Reply(content="too late", delay=1.5))
    with pytest.raises(DeadlineExceeded, match="did not answer in time"):
        await provider.summarize(SUMMARY)


async def test_unreachable_server_is_unavailable() -> None:
    provider = provider_for(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(Unavailable, match="cannot reach the model provider"):
        await provider.summarize(SUMMARY)


# --- the plain-text stream, read without LangChain's per-chunk objects ----------------------

HI = GenerateTask(messages=[Message("user", "Hi")], max_tokens=20, temperature=None)
SSE = "text/event-stream"


async def test_an_error_event_in_the_stream_is_unavailable(fake_openai: FakeOpenAI) -> None:
    provider = provider_for(fake_openai.base_url)
    fake_openai.enqueue(
        Reply(raw='data: {"error": {"message": "overloaded"}}\n\n', raw_content_type=SSE)
    )
    with pytest.raises(Unavailable, match="overloaded"):
        await collect(provider, HI)


async def test_an_event_that_is_not_json_is_malformed(fake_openai: FakeOpenAI) -> None:
    provider = provider_for(fake_openai.base_url)
    fake_openai.enqueue(Reply(raw="data: not json\n\n", raw_content_type=SSE))
    with pytest.raises(Unavailable, match="malformed"):
        await collect(provider, HI)


async def test_events_in_several_data_lines_and_comments_are_read(fake_openai: FakeOpenAI) -> None:
    provider = provider_for(fake_openai.base_url)
    chunk = '{"choices": [{"index": 0,\ndata: "delta": {"content": "joined"}}]}'
    done = '{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}'
    body = f": keep-alive\n\ndata: {chunk}\n\ndata: {done}\n\ndata: [DONE]\n\n"
    fake_openai.enqueue(Reply(raw=body, raw_content_type=SSE))
    deltas = await collect(provider, HI)
    assert "".join(d.text for d in deltas) == "joined"
    assert deltas[-1].finish_reason == "stop"


async def test_a_stream_that_stalls_after_its_first_words_is_deadline_exceeded(
    fake_openai: FakeOpenAI,
) -> None:
    provider = provider_for(fake_openai.base_url, request_timeout_seconds=0.5)
    fake_openai.enqueue(Reply(content="one two three", chunk_delay=2.0))
    seen: list[str] = []

    async def read() -> None:
        async for delta in provider.generate(HI):
            seen.append(delta.text)

    started = asyncio.get_running_loop().time()
    with pytest.raises(DeadlineExceeded):
        await read()
    assert seen == ["one "]
    assert asyncio.get_running_loop().time() - started < 1.9  # the stall, not the next chunk


async def test_a_prompt_too_long_for_the_context_says_so(fake_openai: FakeOpenAI) -> None:
    provider = provider_for(fake_openai.base_url)
    too_long = {
        "message": "This model's maximum context length is 8192 tokens",
        "code": "context_length_exceeded",
    }
    fake_openai.enqueue(Reply(status=400, error=too_long))
    with pytest.raises(InvalidArgument, match="too long for the model"):
        await collect(provider, HI)
    sent = fake_openai.requests[-1].body
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
