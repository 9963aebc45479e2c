"""Every way an upstream can fail before its first token moves the call to the next model of
the chain, within the call's deadline; after the first token, the stream ends with an error.

Each failure is a real local HTTP server misbehaving (tests/llm_router/openai_server.py):
the alias ``default`` on it falls back to ``fast`` on a second server that answers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest

from aimesh.llm.v1 import llm_pb2
from tests.llm_router.conftest import (
    FixedRetrieval,
    RunningRouter,
    models_config,
    openai_model,
    openai_settings,
    start_router,
    stop_router,
)
from tests.llm_router.messages import has_content
from tests.llm_router.openai_server import FakeOpenAI, Reply

ATTEMPT_TIMEOUT = 1.0
DEADLINE = 6.0

MISBEHAVIOURS = {
    "connection reset mid-body": Reply(content="never arrives whole", reset_mid_body=True),
    "hang past the attempt timeout": Reply(delay=ATTEMPT_TIMEOUT + 2),
    "200 with an HTML body": Reply(
        raw="<html><body>Bad gateway</body></html>", raw_content_type="text/html"
    ),
    "200 with a JSON content type that is not JSON": Reply(raw="{not json"),
    "200 with JSON of the wrong schema": Reply(raw='{"unexpected": true}'),
    "200 with an empty body": Reply(raw=""),
    "200 with events of the wrong schema": Reply(
        raw='data: {"unexpected": true}\n\ndata: [DONE]\n\n', raw_content_type="text/event-stream"
    ),
    "HTTP 500": Reply(status=500),
    "HTTP 503": Reply(status=503),
    "HTTP 429": Reply(status=429),
}


@pytest.fixture
async def chain(
    fake_openai: FakeOpenAI,
    backup_openai: FakeOpenAI,
    retrieval_server: tuple[FixedRetrieval, str],
) -> AsyncIterator[RunningRouter]:
    """``default`` (one retry) on the misbehaving server, then ``fast`` on the good one."""
    config = models_config(
        {
            "default": openai_model(
                fake_openai.base_url,
                max_retries=1,
                timeout_seconds=ATTEMPT_TIMEOUT,
                deadline_seconds=DEADLINE,
                fallbacks=["fast"],
            ),
            "fast": openai_model(backup_openai.base_url, model="fast-model"),
        },
        retry={"base_delay_seconds": 0.01, "max_delay_seconds": 0.05},
        # Failing every attempt must not open the circuit between the parametrized cases.
        circuit_breaker={"failure_threshold": 1000, "cooldown_seconds": 60},
    )
    settings = openai_settings(fake_openai.base_url, retrieval_service_addr=retrieval_server[1])
    running = await start_router(settings, config)
    yield running
    await stop_router(running)


@pytest.mark.parametrize("kind", list(MISBEHAVIOURS))
async def test_a_failed_completion_falls_back_to_the_next_model(
    chain: RunningRouter, fake_openai: FakeOpenAI, backup_openai: FakeOpenAI, kind: str
) -> None:
    fake_openai.always = MISBEHAVIOURS[kind]
    backup_openai.enqueue(Reply(content="the fast model's summary"))
    started = time.monotonic()
    reply = await chain.stub.Summarize(
        llm_pb2.SummarizeRequest(text="The sky is blue. Grass is green."), timeout=30
    )
    assert reply.summary == "the fast model's summary"
    assert reply.model == "fast"
    assert len(fake_openai.requests) == 2  # the attempt and its one retry
    assert time.monotonic() - started < DEADLINE


@pytest.mark.parametrize("kind", list(MISBEHAVIOURS))
async def test_a_stream_failing_before_its_first_token_falls_back(
    chain: RunningRouter, fake_openai: FakeOpenAI, backup_openai: FakeOpenAI, kind: str
) -> None:
    fake_openai.always = MISBEHAVIOURS[kind]
    backup_openai.enqueue(Reply(content="fast streams fine"))
    started = time.monotonic()
    request = llm_pb2.GenerateRequest(messages=[llm_pb2.ChatMessage(role="user", content="Hi")])
    replies = [
        reply async for reply in chain.stub.Generate(request, timeout=30) if has_content(reply)
    ]
    assert "".join(reply.delta for reply in replies) == "fast streams fine"
    assert {reply.model for reply in replies} == {"fast"}
    assert replies[-1].finish_reason == "stop"
    assert len(fake_openai.requests) == 2
    assert backup_openai.requests[0].body["stream"] is True
    assert time.monotonic() - started < DEADLINE


@pytest.mark.parametrize("break_after", [1, 3])
async def test_after_the_first_token_a_failure_ends_the_stream_with_an_error(
    chain: RunningRouter, fake_openai: FakeOpenAI, backup_openai: FakeOpenAI, break_after: int
) -> None:
    words = ["one", "two", "three", "four", "five"]
    fake_openai.enqueue(Reply(content=" ".join(words), break_after=break_after))
    received: list[str] = []
    request = llm_pb2.GenerateRequest(messages=[llm_pb2.ChatMessage(role="user", content="Hi")])

    async def read_all() -> None:
        async for reply in chain.stub.Generate(request, timeout=30):
            received.append(reply.delta)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_all()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "".join(received) == " ".join(words[:break_after]) + " "
    assert not backup_openai.requests, "a started stream must not switch models"
