"""The Anthropic provider against a real HTTP server speaking the Messages API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from aimesh.llm.v1 import llm_pb2
from aimesh_common.errors import InvalidArgument, ResourceExhausted, Unavailable
from aimesh_llm_router.modelconfig import ModelSpec
from aimesh_llm_router.providers import AnthropicProvider, ProviderContext
from aimesh_llm_router.providers.base import GenerateTask, Message, SummarizeTask
from aimesh_llm_router.templates import load_prompt_library
from aimesh_llm_router.upstream import retry_after
from tests.llm_router.anthropic_server import FakeAnthropic
from tests.llm_router.conftest import (
    TEST_KEY,
    FixedRetrieval,
    models_config,
    openai_model,
    openai_settings,
    start_router,
    stop_router,
)
from tests.llm_router.messages import has_content
from tests.llm_router.openai_server import FakeOpenAI, Reply

USAGE = {"prompt_tokens": 31, "completion_tokens": 4, "total_tokens": 35}
SUMMARY = SummarizeTask(text="Cats sleep. Dogs bark.", style="brief", max_words=0, max_tokens=64)


@pytest.fixture(scope="session")
async def anthropic_server() -> AsyncIterator[FakeAnthropic]:
    server = FakeAnthropic()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def fake_anthropic(anthropic_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    anthropic_server.reset()
    yield anthropic_server
    anthropic_server.reset()


def provider_for(server: FakeAnthropic) -> AnthropicProvider:
    spec = ModelSpec(
        provider="anthropic",
        model="claude-test",
        base_url=server.base_url,
        api_key=TEST_KEY,
        timeout_seconds=5,
    )
    return AnthropicProvider.from_model(
        spec,
        ProviderContext(
            settings=openai_settings(server.base_url), prompts=load_prompt_library(), embedding=None
        ),
    )


async def test_summarize_sends_system_prompt_key_and_reads_usage(
    fake_anthropic: FakeAnthropic,
) -> None:
    fake_anthropic.enqueue(Reply(content="Animals rest and bark.", usage=USAGE))
    result = await provider_for(fake_anthropic).summarize(SUMMARY)
    assert result.text == "Animals rest and bark."
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (31, 4)
    assert not result.usage.estimated
    sent = fake_anthropic.requests[0]
    # The SDK sends the key as x-api-key or, in newer versions, as a bearer token.
    assert TEST_KEY in (sent.headers.get("x-api-key") or sent.headers["authorization"])
    assert "anthropic-version" in sent.headers
    assert sent.body["model"] == "claude-test"
    assert sent.body["max_tokens"] == 64
    assert "summar" in str(sent.body["system"]).lower()
    assert sent.body["messages"][0]["role"] == "user"
    assert "Cats sleep." in str(sent.body["messages"][0]["content"])


async def test_generate_streams_sse_events_with_usage_and_length(
    fake_anthropic: FakeAnthropic,
) -> None:
    fake_anthropic.enqueue(Reply(content="one two three", usage=USAGE, finish_reason="length"))
    task = GenerateTask(messages=[Message("user", "Count")], max_tokens=3, temperature=0.2)
    deltas = [delta async for delta in provider_for(fake_anthropic).generate(task)]
    assert "".join(delta.text for delta in deltas) == "one two three"
    assert len([delta for delta in deltas if delta.text]) == 3
    last = deltas[-1]
    assert last.finish_reason == "length"
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (31, 4)
    assert fake_anthropic.requests[0].body["stream"] is True
    assert fake_anthropic.requests[0].body["temperature"] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("usage", "prompt_tokens"),
    [
        # The documented minimum: message_delta has only output_tokens; the input tokens
        # come from message_start.
        ({**USAGE, "delta_output_only": 1}, 31),
        # Cached input counts as input: 31 new + 100 read from the cache + 20 written to it.
        (
            {
                **USAGE,
                "delta_output_only": 1,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20,
            },
            151,
        ),
        # Cumulative counts in message_delta override message_start's, never add to them.
        ({**USAGE, "cache_read_input_tokens": 100}, 131),
    ],
)
async def test_streamed_usage_takes_input_tokens_from_message_start(
    fake_anthropic: FakeAnthropic, usage: dict[str, int], prompt_tokens: int
) -> None:
    fake_anthropic.enqueue(Reply(content="one two three", usage=usage))
    task = GenerateTask(messages=[Message("user", "Count")], max_tokens=16, temperature=0.0)
    deltas = [delta async for delta in provider_for(fake_anthropic).generate(task)]
    last = deltas[-1].usage
    assert last is not None
    assert (last.prompt_tokens, last.completion_tokens) == (prompt_tokens, 4)
    assert not last.estimated


async def test_errors_are_mapped_with_retry_after(fake_anthropic: FakeAnthropic) -> None:
    provider = provider_for(fake_anthropic)
    fake_anthropic.enqueue(Reply(status=429, headers={"retry-after": "3"}))
    with pytest.raises(ResourceExhausted) as caught:
        await provider.summarize(SUMMARY)
    assert retry_after(caught.value) == 3.0
    fake_anthropic.enqueue(Reply(status=400, error={"message": "prompt is too long"}))
    with pytest.raises(InvalidArgument, match="prompt is too long"):
        await provider.summarize(SUMMARY)
    fake_anthropic.enqueue(Reply(status=529))
    with pytest.raises(Unavailable):
        await provider.summarize(SUMMARY)
    assert len(fake_anthropic.requests) == 3


async def test_anthropic_as_fallback_of_an_openai_alias_over_grpc(
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    retrieval_server: tuple[FixedRetrieval, str],
) -> None:
    config = models_config(
        {
            "default": openai_model(fake_openai.base_url, fallbacks=["claude"]),
            "claude": {
                "provider": "anthropic",
                "model": "claude-test",
                "base_url": fake_anthropic.base_url,
                "api_key_env": "TEST_KEY_VAR",
                "timeout_seconds": 5,
                "max_retries": 0,
            },
        }
    )
    router = await start_router(
        openai_settings(fake_openai.base_url, retrieval_service_addr=retrieval_server[1]), config
    )
    try:
        fake_openai.enqueue(Reply(status=500))
        fake_anthropic.enqueue(Reply(content="Claude says hi", usage=USAGE))
        replies = [
            reply
            async for reply in router.stub.Generate(
                llm_pb2.GenerateRequest(messages=[llm_pb2.ChatMessage(role="user", content="Hi")])
            )
            if has_content(reply)
        ]
        assert "".join(reply.delta for reply in replies) == "Claude says hi"
        assert {reply.model for reply in replies} == {"claude"}
        assert replies[-1].usage.prompt_tokens == 31
        fake_anthropic.enqueue(Reply(status=401))
        fake_openai.enqueue(Reply(status=500))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await router.stub.Summarize(llm_pb2.SummarizeRequest(text="Cats sleep."))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert TEST_KEY not in (caught.value.details() or "")
    finally:
        await stop_router(router)


async def test_calls_carry_the_routers_trace_when_it_traces(
    fake_anthropic: FakeAnthropic,
) -> None:
    """ChatAnthropic takes no HTTP client: the provider gives its SDK client a traced one."""
    exporter = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(exporter))
    provider = AnthropicProvider.from_model(
        ModelSpec(
            provider="anthropic",
            model="claude-test",
            base_url=fake_anthropic.base_url,
            api_key=TEST_KEY,
            timeout_seconds=5,
        ),
        ProviderContext(
            settings=openai_settings(fake_anthropic.base_url),
            prompts=load_prompt_library(),
            embedding=None,
            tracer_provider=tracing,
        ),
    )
    fake_anthropic.enqueue(Reply(content="Rest.", usage=USAGE), Reply(content="Bark.", usage=USAGE))
    with tracing.get_tracer("test").start_as_current_span("rpc") as rpc:
        await provider.summarize(SUMMARY)
        streamed = [
            d.text
            async for d in provider.generate(
                GenerateTask(messages=[Message("user", "Speak")], max_tokens=5, temperature=None)
            )
        ]
    await provider.aclose()
    assert "".join(streamed) == "Bark."
    calls = {
        s.context.span_id: s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT
    }
    assert len(calls) == 2
    for sent in fake_anthropic.requests:
        _, trace_id, span_id, _ = sent.headers["traceparent"].split("-")
        assert int(trace_id, 16) == rpc.get_span_context().trace_id
        call = calls[int(span_id, 16)]
        assert call.parent is not None
        assert call.parent.span_id == rpc.get_span_context().span_id
