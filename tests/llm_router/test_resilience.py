"""Retries, Retry-After, deadlines, circuit breakers and fallbacks, over real gRPC against
real HTTP servers speaking the OpenAI protocol."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from aimesh.llm.v1 import llm_pb2
from aimesh_llm_router.modelconfig import BreakerSpec
from aimesh_llm_router.resilience import CircuitBreaker
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

SUMMARIZE = llm_pb2.SummarizeRequest(text="The sky is blue. Grass is green.")
GENERATE = llm_pb2.GenerateRequest(messages=[llm_pb2.ChatMessage(role="user", content="Hi")])
USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(breaker: CircuitBreaker) -> str:
    return breaker.state


def test_breaker_opens_after_consecutive_failures_and_half_opens_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerSpec(failure_threshold=2, cooldown_seconds=10), clock)
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.allow()
    assert state(breaker) == "closed"
    breaker.failure()
    assert state(breaker) == "open"
    assert not breaker.allow()
    clock.now += 10
    assert breaker.allow()
    assert state(breaker) == "half_open"
    assert not breaker.allow()  # one trial at a time
    breaker.failure()
    assert state(breaker) == "open"
    assert not breaker.allow()
    clock.now += 10
    assert breaker.allow()
    breaker.success()
    assert state(breaker) == "closed"
    assert breaker.allow()
    assert breaker.allow()


async def router_with(
    retrieval_server: tuple[FixedRetrieval, str],
    primary: FakeOpenAI,
    backup: FakeOpenAI | None = None,
    breaker: dict[str, Any] | None = None,
    **primary_overrides: Any,
) -> RunningRouter:
    models: dict[str, Any] = {
        "default": openai_model(
            primary.base_url,
            **{
                "max_retries": 2,
                "fallbacks": ["backup"] if backup else [],
                "price_per_1k_input": 0.5,
                "price_per_1k_output": 2.0,
                **primary_overrides,
            },
        )
    }
    if backup is not None:
        models["backup"] = openai_model(backup.base_url, model="backup-model")
    config = models_config(
        models,
        retry={"base_delay_seconds": 0.01, "max_delay_seconds": 0.05},
        circuit_breaker=breaker or {"failure_threshold": 5, "cooldown_seconds": 60},
    )
    settings = openai_settings(primary.base_url, retrieval_service_addr=retrieval_server[1])
    return await start_router(settings, config)


@pytest.fixture
async def router(
    fake_openai: FakeOpenAI,
    backup_openai: FakeOpenAI,
    retrieval_server: tuple[FixedRetrieval, str],
) -> AsyncIterator[RunningRouter]:
    running = await router_with(retrieval_server, fake_openai, backup_openai)
    yield running
    await stop_router(running)


async def test_429_waits_for_retry_after_then_succeeds(
    router: RunningRouter, fake_openai: FakeOpenAI, backup_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        Reply(status=429, headers={"retry-after": "1"}),
        Reply(content="after the wait", usage=USAGE),
    )
    start = time.monotonic()
    reply = await router.stub.Summarize(SUMMARIZE)
    elapsed = time.monotonic() - start
    assert reply.summary == "after the wait"
    assert reply.model == "default"
    assert elapsed >= 0.95, "Retry-After: 1 was not honoured"
    assert len(fake_openai.requests) == 2
    assert not backup_openai.requests
    assert reply.usage.cost_usd == pytest.approx(1000 * 0.5 / 1000 + 500 * 2.0 / 1000)


async def test_500_and_malformed_json_are_retried(
    router: RunningRouter, fake_openai: FakeOpenAI, backup_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(status=500), Reply(raw="{not json"), Reply(content="third time"))
    reply = await router.stub.Summarize(SUMMARIZE)
    assert reply.summary == "third time"
    assert reply.model == "default"
    assert len(fake_openai.requests) == 3
    assert not backup_openai.requests


async def test_persistent_failure_falls_back_and_says_which_model_answered(
    router: RunningRouter, fake_openai: FakeOpenAI, backup_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(*(Reply(status=503) for _ in range(3)))
    backup_openai.enqueue(Reply(content="from the backup"))
    reply = await router.stub.Summarize(SUMMARIZE)
    assert reply.summary == "from the backup"
    assert reply.model == "backup"
    assert len(fake_openai.requests) == 3
    assert backup_openai.requests[0].body["model"] == "backup-model"


async def test_client_errors_are_neither_retried_nor_sent_to_a_fallback(
    router: RunningRouter, fake_openai: FakeOpenAI, backup_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        Reply(status=400, error={"message": "maximum context length is 8192 tokens"})
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await router.stub.Summarize(SUMMARIZE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "maximum context length is 8192 tokens" in (caught.value.details() or "")
    assert len(fake_openai.requests) == 1
    assert not backup_openai.requests


async def test_a_hang_past_the_attempt_timeout_falls_back(
    fake_openai: FakeOpenAI,
    backup_openai: FakeOpenAI,
    retrieval_server: tuple[FixedRetrieval, str],
) -> None:
    router = await router_with(
        retrieval_server, fake_openai, backup_openai, timeout_seconds=0.3, max_retries=0
    )
    try:
        fake_openai.enqueue(Reply(content="too late", delay=3))
        backup_openai.enqueue(Reply(content="in time"))
        start = time.monotonic()
        reply = await router.stub.Summarize(SUMMARIZE)
        assert time.monotonic() - start < 2
        assert (reply.summary, reply.model) == ("in time", "backup")
    finally:
        await stop_router(router)


async def test_the_call_deadline_bounds_all_attempts(
    fake_openai: FakeOpenAI, retrieval_server: tuple[FixedRetrieval, str]
) -> None:
    router = await router_with(
        retrieval_server, fake_openai, timeout_seconds=0.4, deadline_seconds=1.0, max_retries=5
    )
    try:
        fake_openai.enqueue(*(Reply(delay=3) for _ in range(6)))
        start = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await router.stub.Summarize(SUMMARIZE)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - start < 2.0
        assert len(fake_openai.requests) <= 3
    finally:
        await stop_router(router)


async def test_the_client_deadline_is_honoured(
    router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(delay=3))
    start = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await router.stub.Summarize(SUMMARIZE, timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 1.5


async def test_an_open_circuit_skips_the_upstream(
    fake_openai: FakeOpenAI,
    backup_openai: FakeOpenAI,
    retrieval_server: tuple[FixedRetrieval, str],
) -> None:
    router = await router_with(
        retrieval_server,
        fake_openai,
        backup_openai,
        breaker={"failure_threshold": 2, "cooldown_seconds": 60},
        max_retries=0,
    )
    try:
        fake_openai.enqueue(Reply(status=500), Reply(status=500))
        for _ in range(2):
            assert (await router.stub.Summarize(SUMMARIZE)).model == "backup"
        assert len(fake_openai.requests) == 2
        fake_openai.enqueue(Reply(content="healthy again"))
        reply = await router.stub.Summarize(SUMMARIZE)
        assert reply.model == "backup"
        assert len(fake_openai.requests) == 2, "the open circuit still let a call through"
    finally:
        await stop_router(router)


async def test_a_stream_failing_before_its_first_token_falls_back(
    router: RunningRouter, fake_openai: FakeOpenAI, backup_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(*(Reply(content="never sent", break_after=0) for _ in range(3)))
    backup_openai.enqueue(Reply(content="backup streams fine", usage=USAGE))
    replies = [reply async for reply in router.stub.Generate(GENERATE) if has_content(reply)]
    assert "".join(reply.delta for reply in replies) == "backup streams fine"
    assert {reply.model for reply in replies} == {"backup"}
    assert replies[-1].finish_reason == "stop"


async def test_a_mid_stream_disconnect_reaches_the_client_after_its_tokens(
    router: RunningRouter, fake_openai: FakeOpenAI, backup_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="one two three four five", break_after=2))
    received: list[str] = []

    async def read_all() -> None:
        async for reply in router.stub.Generate(GENERATE):
            received.append(reply.delta)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_all()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "".join(received) == "one two "
    assert not backup_openai.requests, "a started stream must not switch models"


async def test_streams_retry_a_429_before_the_first_token(
    router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        Reply(status=429, headers={"retry-after-ms": "200"}), Reply(content="second try")
    )
    start = time.monotonic()
    replies = [reply async for reply in router.stub.Generate(GENERATE) if has_content(reply)]
    assert time.monotonic() - start >= 0.19
    assert "".join(reply.delta for reply in replies) == "second try"
    assert {reply.model for reply in replies} == {"default"}


async def test_cancelling_a_stream_cancels_the_upstream_call(
    router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="slow", delay=5))
    call = router.stub.Generate(GENERATE)
    while not fake_openai.requests:  # noqa: ASYNC110 - wait for the upstream request
        await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call.read()
    for _ in range(200):
        if fake_openai.disconnects:
            break
        await asyncio.sleep(0.01)
    assert fake_openai.disconnects == 1


async def test_usage_and_cost_are_counted_per_tenant_alias_and_provider(
    router: RunningRouter, fake_openai: FakeOpenAI, backup_openai: FakeOpenAI
) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    tenant = f"tenant-{time.monotonic_ns()}"
    fake_openai.enqueue(*(Reply(status=500) for _ in range(3)))
    backup_openai.enqueue(Reply(content="from backup", usage=USAGE))
    await router.stub.Summarize(llm_pb2.SummarizeRequest(text="Cats.", tenant_id=tenant))
    labels = {"alias": "backup", "provider": "openai", "tenant": tenant}
    assert sample("aimesh_llm_tenant_tokens_total", kind="prompt", **labels) == 1000
    assert sample("aimesh_llm_tenant_tokens_total", kind="completion", **labels) == 500
    # The backup alias has no prices: its calls cost nothing.
    assert sample("aimesh_llm_tenant_cost_usd_total", **labels) == 0.0
    fake_openai.enqueue(Reply(content="priced", usage=USAGE))
    await router.stub.Summarize(llm_pb2.SummarizeRequest(text="Cats.", tenant_id=tenant))
    priced = {"alias": "default", "provider": "openai", "tenant": tenant}
    assert sample("aimesh_llm_tenant_cost_usd_total", **priced) == pytest.approx(1.5)
    assert sample("aimesh_llm_fallbacks_total", from_alias="default", to_alias="backup") >= 1
