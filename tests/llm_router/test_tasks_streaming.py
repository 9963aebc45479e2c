"""Summarize map-reduce over long texts, and the typed event streams of StreamSummarize
and StreamAnswer, over real gRPC against the OpenAI-protocol test server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aimesh.llm.v1 import llm_pb2
from aimesh_llm_router.tokens import count_tokens, split_by_tokens
from tests.llm_router.conftest import (
    FixedRetrieval,
    RunningRouter,
    models_config,
    openai_model,
    openai_settings,
    start_router,
    stop_router,
)
from tests.llm_router.openai_server import FakeOpenAI, Reply

USAGE = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
LONG_TEXT = "\n\n".join(
    f"Paragraph {index} explains topic number {index} in some detail. " * 12 for index in range(12)
)


@pytest.fixture
async def small_router(
    fake_openai: FakeOpenAI, retrieval_server: tuple[FixedRetrieval, str]
) -> AsyncIterator[RunningRouter]:
    """A router whose default alias has a 1024-token context (300 for the reply)."""
    config = models_config(
        {
            "default": openai_model(
                fake_openai.base_url,
                context_window=1024,
                max_tokens=300,
                price_per_1k_input=1.0,
            )
        }
    )
    settings = openai_settings(fake_openai.base_url, retrieval_service_addr=retrieval_server[1])
    running = await start_router(settings, config)
    yield running
    await stop_router(running)


def test_split_by_tokens_respects_the_limit_and_keeps_all_text() -> None:
    pieces = split_by_tokens(LONG_TEXT, 200)
    assert len(pieces) > 1
    assert all(count_tokens(piece) <= 200 for piece in pieces)
    assert "".join(pieces).replace(" ", "").replace("\n", "") == LONG_TEXT.replace(" ", "").replace(
        "\n", ""
    )


async def test_a_text_beyond_the_context_is_summarized_by_map_reduce(
    small_router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    assert count_tokens(LONG_TEXT) > 1024
    pieces = len(split_by_tokens(LONG_TEXT, 600))
    fake_openai.enqueue(*(Reply(content=f"partial {i}", usage=USAGE) for i in range(pieces + 5)))
    reply = await small_router.stub.Summarize(
        llm_pb2.SummarizeRequest(text=LONG_TEXT, style="bullets")
    )
    calls = len(fake_openai.requests)
    assert calls >= 3, "expected several map calls and one reduce call"
    # Each map call got a part of the text, the reduce call the partial summaries.
    final_prompt = fake_openai.requests[-1].messages[-1]["content"]
    assert "partial 0" in final_prompt
    assert "Paragraph 0" not in final_prompt
    assert all(count_tokens(str(r.messages)) < 1024 for r in fake_openai.requests)
    assert reply.summary == f"partial {calls - 1}"
    assert reply.usage.prompt_tokens == 100 * calls
    assert reply.usage.cost_usd == pytest.approx(100 * calls / 1000)


async def test_a_text_that_fits_is_summarized_in_one_call(
    small_router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="short"))
    reply = await small_router.stub.Summarize(llm_pb2.SummarizeRequest(text="Cats sleep."))
    assert reply.summary == "short"
    assert len(fake_openai.requests) == 1


async def test_stream_summarize_events(
    openai_router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="a short summary", usage=USAGE))
    events = [
        event
        async for event in openai_router.stub.StreamSummarize(
            llm_pb2.SummarizeRequest(text="Cats sleep. Dogs bark.", tenant_id="acme")
        )
    ]
    assert [e.WhichOneof("event") for e in events] == ["delta"] * 3 + ["usage", "done"]
    assert "".join(e.delta for e in events) == "a short summary"
    assert events[-2].usage.prompt_tokens == 100
    assert events[-1].done.model == "default"
    assert events[-1].done.finish_reason == "stop"
    assert fake_openai.requests[0].body["stream"] is True


async def test_stream_answer_events(
    openai_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    retrieval.put("acme", "kb", [("d1", "Paris is in France."), ("d2", "Rome is in Italy.")])
    fake_openai.enqueue(Reply(content="Paris [1] and [9].", usage=USAGE))
    events = [
        event
        async for event in openai_router.stub.StreamAnswer(
            llm_pb2.AnswerRequest(question="Where is Paris?", collection="kb", tenant_id="acme")
        )
    ]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "sources"
    assert kinds[-3:] == ["citations", "usage", "done"]
    assert [i.document_id for i in events[0].sources.items] == ["d1", "d2"]
    assert "".join(e.delta for e in events) == "Paris [1] and [9]."
    assert [(c.source, c.document_id) for c in events[-3].citations.items] == [(1, "d1")]


async def test_stream_answer_without_matching_chunks(
    openai_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    retrieval.put("acme", "empty", [])
    events = [
        event
        async for event in openai_router.stub.StreamAnswer(
            llm_pb2.AnswerRequest(question="Anything?", collection="empty", tenant_id="acme")
        )
    ]
    assert [e.WhichOneof("event") for e in events] == ["sources", "delta", "usage", "done"]
    assert events[1].delta.startswith("I don't know")
    assert not fake_openai.requests
