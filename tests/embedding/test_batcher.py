"""Dynamic batching over real gRPC and the real model: order, bucketing, overload, cancel."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_embedding.config import Settings
from aimesh_embedding.server import create_server
from tests.embedding.texts import words

if TYPE_CHECKING:
    from aimesh.embedding.v1.embedding_pb2_grpc import EmbeddingServiceAsyncStub as Stub
    from aimesh_embedding.model import TorchEncoder

SHORT = [
    "The train was late again this morning.",
    "She planted tomatoes along the fence.",
    "Interest rates rose for the third month in a row.",
    "A quiet street in the old town.",
    "He fixed the bicycle with a borrowed wrench.",
    "Rain is expected over the weekend.",
    "The museum opens at nine.",
    "Our team shipped the release on Friday.",
]


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def as_array(response: embedding_pb2.EmbedResponse) -> np.ndarray:
    return np.array([list(item.values) for item in response.embeddings], dtype=np.float32)


def request(*inputs: str, truncate: bool = True) -> embedding_pb2.EmbedRequest:
    return embedding_pb2.EmbedRequest(inputs=list(inputs), truncate=truncate)


async def test_concurrent_callers_get_their_own_vectors_in_order(
    embedding_stub: Stub, embedding_encoder: TorchEncoder
) -> None:
    rng = random.Random(7)
    calls: list[list[str]] = []
    for number in range(48):
        size = rng.choice([1, 1, 1, 2, 3])
        texts = []
        for _ in range(size):
            if rng.random() < 0.15:
                texts.append(words(rng.randint(60, 300), start=number) + f" call {number}")
            else:
                texts.append(f"{rng.choice(SHORT)} (call {number}, {rng.randint(0, 999)})")
        calls.append(texts)
    batches_before = sample("aimesh_embedding_batch_inputs_count")
    inputs_before = sample("aimesh_embedding_batch_inputs_sum")

    responses = await asyncio.gather(
        *(embedding_stub.Embed(request(*texts), timeout=120) for texts in calls)
    )

    batches = sample("aimesh_embedding_batch_inputs_count") - batches_before
    inputs = sample("aimesh_embedding_batch_inputs_sum") - inputs_before
    total = sum(len(texts) for texts in calls)
    assert inputs == total
    assert batches < len(calls) / 2, f"{batches} batches for {len(calls)} calls: no batching"
    for texts, response in zip(calls, responses, strict=True):
        # The model's direct output for this call alone: same vectors, same order.
        direct = embedding_encoder.embed(texts, truncate=True, dimensions=0)
        np.testing.assert_allclose(as_array(response), direct.vectors, atol=1e-5)
        assert response.usage.prompt_tokens == direct.tokens


async def test_long_and_short_inputs_are_not_padded_together(embedding_stub: Stub) -> None:
    def poorly_filled() -> float:
        return sample("aimesh_embedding_batch_fill_ratio_bucket", {"le": "0.4"})

    before = poorly_filled()
    batches_before = sample("aimesh_embedding_batch_fill_ratio_count")
    texts = [f"{SHORT[i % len(SHORT)]} #{i}" for i in range(24)]
    texts[5] = words(250, start=1)
    texts[17] = words(240, start=2)
    await asyncio.gather(*(embedding_stub.Embed(request(text), timeout=120) for text in texts))
    assert sample("aimesh_embedding_batch_fill_ratio_count") > batches_before
    assert poorly_filled() == before


@pytest.fixture(scope="module")
async def small_queue_stub(embedding_encoder: TorchEncoder) -> AsyncIterator[Stub]:
    """A server whose queue holds 8 inputs (and whose calls carry at most 8)."""
    settings = Settings(
        port=0,
        host="127.0.0.1",
        metrics_port=None,
        max_inputs_per_request=8,
        embedding_max_queue_inputs=8,
    )
    server = create_server(settings, embedding_encoder)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield embedding_pb2_grpc.EmbeddingServiceStub(channel)
    await server.stop(5)


async def call(
    stub: Stub, embed_request: embedding_pb2.EmbedRequest
) -> embedding_pb2.EmbedResponse:
    return await stub.Embed(embed_request, timeout=120)


async def wait_for_queue(minimum: float) -> None:
    deadline = time.monotonic() + 30
    while sample("aimesh_embedding_queue_inputs") < minimum:
        assert time.monotonic() < deadline, "the call never reached the queue"
        await asyncio.sleep(0.005)


async def test_full_queue_is_resource_exhausted_at_once(small_queue_stub: Stub) -> None:
    rejected_before = sample("aimesh_embedding_rejections_total", {"reason": "queue_full"})
    heavy = request(*(words(300, start=i) for i in range(8)))
    running = asyncio.create_task(call(small_queue_stub, heavy))
    await wait_for_queue(8)

    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await small_queue_stub.Embed(request("one more"), timeout=30)
    elapsed = time.perf_counter() - started
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full" in (caught.value.details() or "")
    assert elapsed < 0.25, f"the refusal took {elapsed:.3f}s"
    assert not running.done(), "the heavy call finished before the refusal proved anything"
    after = sample("aimesh_embedding_rejections_total", {"reason": "queue_full"})
    assert after == rejected_before + 1

    assert len((await running).embeddings) == 8
    # Room again: the next call is served.
    assert len((await small_queue_stub.Embed(request("one more"), timeout=30)).embeddings) == 1


async def test_a_cancelled_call_leaves_the_queue(small_queue_stub: Stub) -> None:
    heavy = request(*(words(300, start=i) for i in range(4)))
    running = asyncio.create_task(call(small_queue_stub, heavy))
    await wait_for_queue(4)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await small_queue_stub.Embed(
            request(*(words(200, start=i) for i in range(4))), timeout=0.05
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await running
    deadline = time.monotonic() + 10
    while sample("aimesh_embedding_queue_inputs") > 0:
        assert time.monotonic() < deadline, "the cancelled call's inputs stayed queued"
        await asyncio.sleep(0.01)


async def test_an_idle_model_hands_free_memory_back(embedding_encoder: TorchEncoder) -> None:
    """AIMESH_EMBEDDING_MALLOC_TRIM_SECONDS: when the queue is empty and the setting's time
    has passed since the last trim, the batcher trims on the model's thread, once per
    stretch of work (an idle model is not trimmed again), and calls are served after it."""
    settings = Settings(
        port=0, host="127.0.0.1", metrics_port=None, embedding_malloc_trim_seconds=0.3
    )
    server = create_server(settings, embedding_encoder)
    await server.start()

    def trims() -> float:
        return sample("aimesh_embedding_malloc_trim_seconds_count")

    async def wait_for_trims(count: float) -> None:
        deadline = time.monotonic() + 10
        while trims() < count:
            assert time.monotonic() < deadline, "the idle model never trimmed"
            await asyncio.sleep(0.02)

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
            before = trims()
            assert len((await call(stub, request(*SHORT))).embeddings) == len(SHORT)
            # Not due at once: it waits for the setting's 0.3 s, then trims while idle.
            assert trims() == before
            await wait_for_trims(before + 1)
            await asyncio.sleep(0.7)
            assert trims() == before + 1  # idle since: nothing more to hand back
            assert len((await call(stub, request("after the trim"))).embeddings) == 1
            await wait_for_trims(before + 2)
    finally:
        await server.stop(5)
