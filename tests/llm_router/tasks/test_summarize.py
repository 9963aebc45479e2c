"""Summarize and StreamSummarize over real gRPC against the OpenAI-protocol test server:
validation, metrics, map-reduce over texts beyond the context, the typed event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import REGISTRY

from aimesh.llm.v1 import llm_pb2
from aimesh_llm_router.tokens import count_tokens, split_by_tokens
from tests.llm_router.conftest import (
    FixedRetrieval,
    RunningRouter,
    models_config,
    openai_model,
    openai_settings,
    rpc_error,
    start_router,
    stop_router,
)
from tests.llm_router.messages import has_content
from tests.llm_router.openai_server import FakeOpenAI, Reply

USAGE = {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132}
# Round numbers for sums over several calls.
ROUND_USAGE = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
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


async def test_summarize(openai_router: RunningRouter, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply(content="A summary.", usage=USAGE))
    before = REGISTRY.get_sample_value(
        "aimesh_llm_requests_total",
        {
            "alias": "fast",
            "provider": "openai",
            "task": "summarize",
            "prompt_version": "summarize/v1",
            "outcome": "OK",
        },
    )
    reply = await openai_router.stub.Summarize(
        llm_pb2.SummarizeRequest(text="Long text.", model="fast", style="detailed", tenant_id="t1")
    )
    assert reply.summary == "A summary."
    assert reply.model == "fast"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (120, 12)
    assert reply.usage.total_tokens == 132
    assert not reply.usage.estimated
    assert "every main point" in fake_openai.requests[-1].messages[1]["content"]
    after = REGISTRY.get_sample_value(
        "aimesh_llm_requests_total",
        {
            "alias": "fast",
            "provider": "openai",
            "task": "summarize",
            "prompt_version": "summarize/v1",
            "outcome": "OK",
        },
    )
    assert after == (before or 0) + 1
    tokens = REGISTRY.get_sample_value(
        "aimesh_llm_tokens_total",
        {
            "alias": "fast",
            "provider": "openai",
            "task": "summarize",
            "prompt_version": "summarize/v1",
            "kind": "completion",
        },
    )
    assert tokens is not None
    assert tokens >= 12


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (llm_pb2.SummarizeRequest(text="   "), "text must not be empty"),
        (llm_pb2.SummarizeRequest(text="x", style="haiku"), "style must be one of brief"),
        (llm_pb2.SummarizeRequest(text="x", max_words=10**6), "max_words must be at most"),
    ],
)
async def test_summarize_validation(
    openai_router: RunningRouter, request_: llm_pb2.SummarizeRequest, message: str
) -> None:
    error = await rpc_error(openai_router.stub.Summarize(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.details() or "")


async def test_a_text_beyond_the_context_is_summarized_by_map_reduce(
    small_router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    assert count_tokens(LONG_TEXT) > 1024
    pieces = len(split_by_tokens(LONG_TEXT, 600))
    fake_openai.enqueue(
        *(Reply(content=f"partial {i}", usage=ROUND_USAGE) for i in range(pieces + 5))
    )
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
    fake_openai.enqueue(Reply(content="a short summary", usage=ROUND_USAGE))
    events = [
        event
        async for event in openai_router.stub.StreamSummarize(
            llm_pb2.SummarizeRequest(text="Cats sleep. Dogs bark.", tenant_id="acme")
        )
        if has_content(event)
    ]
    assert [e.WhichOneof("event") for e in events] == ["delta"] * 3 + ["usage", "done"]
    assert "".join(e.delta for e in events) == "a short summary"
    assert events[-2].usage.prompt_tokens == 100
    assert events[-1].done.model == "default"
    assert events[-1].done.finish_reason == "stop"
    assert fake_openai.requests[0].body["stream"] is True
