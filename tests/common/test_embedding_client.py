"""The kit's embedding client (retrieval's and the router's) against the real embedding
server, and against a recording one where the calls are counted."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from aimesh_common.embedding_client import EmbeddingClient
from aimesh_common.errors import FailedPrecondition, Unavailable
from tests.common.embed_calls import recorded_channel
from tests.common.fakes import recording_embedding
from tests.conftest import free_port

TEXTS = [
    f"Text number {i} is about {topic}."
    for i, topic in enumerate(
        ["cats", "ships", "rain", "jazz", "maths", "tea", "snow", "trains", "bees", "chess", "salt"]
    )
]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def test_info(embedding_addr: str) -> None:
    client = EmbeddingClient.connect(embedding_addr)
    try:
        info = await client.info()
        assert info.dimension == 384
        assert "MiniLM" in info.model
        assert await client.info() is info
    finally:
        await client.close()


async def test_batches_keep_the_order_of_the_inputs(embedding_addr: str) -> None:
    batched = EmbeddingClient.connect(embedding_addr, batch_size=3, concurrency=3)
    single = EmbeddingClient.connect(embedding_addr, batch_size=1, concurrency=1)
    try:
        vectors = await batched.embed(TEXTS)
        assert len(vectors) == len(TEXTS)
        for text, vector in zip(TEXTS, vectors, strict=True):
            [alone] = await single.embed([text])
            assert cosine(vector, alone) == pytest.approx(1.0, abs=1e-4)
        # Neighbours differ, so a shifted order would have been caught above.
        assert cosine(vectors[0], vectors[1]) < 0.95
        assert await batched.embed([]) == []
    finally:
        await batched.close()
        await single.close()


async def test_unreachable_service_is_unavailable() -> None:
    client = EmbeddingClient.connect(f"127.0.0.1:{free_port()}", timeout=5)
    try:
        with pytest.raises(Unavailable, match=r"^embedding service unavailable: "):
            await client.embed(["hello"])
    finally:
        await client.close()


async def test_batches_are_no_larger_than_the_service_accepts() -> None:
    async with recording_embedding() as (servicer, addr):
        client = EmbeddingClient.connect(addr, batch_size=100, concurrency=2)
        try:
            vectors = await client.embed([f"text {i}" for i in range(130)])
        finally:
            await client.close()
    assert len(vectors) == 130
    assert all(len(vector) == servicer.dimension for vector in vectors)
    # Info says 64 inputs per call at most: 64 + 64 + 2.
    assert [seen.method for seen in servicer.seen] == ["Info", "Embed", "Embed", "Embed"]


async def test_a_rejected_input_is_a_failure_of_the_dependency(embedding_addr: str) -> None:
    """The client sends only non-empty texts with truncation on: should the service still
    refuse one, the fault is not the caller's, so it is UNAVAILABLE, not INVALID_ARGUMENT."""
    client = EmbeddingClient.connect(embedding_addr)
    try:
        with pytest.raises(Unavailable, match=r"^embedding service failed \(INVALID_ARGUMENT\)$"):
            await client.embed(["fine", ""])
    finally:
        await client.close()


async def test_the_callers_channel_stays_open_and_carries_the_calls(embedding_addr: str) -> None:
    channel, calls = recorded_channel(embedding_addr)
    try:
        client = EmbeddingClient(channel, timeout=30)
        [first] = await client.embed(["one"])
        await client.close()  # the channel is the caller's: still usable
        [again] = await client.embed(["one"])
        assert cosine(first, again) == pytest.approx(1.0, abs=1e-6)
        assert calls.calls == [["one"], ["one"]]
    finally:
        await channel.close()


async def test_rerank_splits_long_lists_and_keeps_the_text_order() -> None:
    texts = [f"text {'x' * (i % 17)} {i}" for i in range(130)]
    async with recording_embedding() as (servicer, addr):
        client = EmbeddingClient.connect(addr)
        try:
            scores = await client.rerank("query", texts)
        finally:
            await client.close()
    # The fake scores a text by its length and answers best first; the client puts the
    # scores back in text order across the 64 + 64 + 2 calls Info allows.
    assert scores == [float(len(text)) for text in texts]
    assert [seen.method for seen in servicer.seen] == ["Info", "Rerank", "Rerank", "Rerank"]


async def test_rerank_without_a_rerank_model_is_a_failed_precondition(
    embedding_addr: str,
) -> None:
    client = EmbeddingClient.connect(embedding_addr)
    try:
        with pytest.raises(FailedPrecondition, match="AIMESH_RERANK_MODEL"):
            await client.rerank("query", ["a text"])
        assert await client.rerank("query", []) == []
    finally:
        await client.close()


async def test_a_text_longer_than_the_service_accepts_is_cut_not_refused(
    embedding_addr: str,
) -> None:
    """A text over the service's character limit (32,768 by default) is cut to it before
    the call, as the model would truncate it anyway: the same vector as its first 32,768
    characters, not a failed call (issue 19: a 100,000-character instruction to the local
    provider answered 503)."""
    from aimesh_common.embedding_client import MAX_INPUT_CHARS

    client = EmbeddingClient.connect(embedding_addr)
    try:
        long = "The harbour freezes in January. " * 4000
        assert len(long) > MAX_INPUT_CHARS
        cut, head = await client.embed([long, long[:MAX_INPUT_CHARS]])
        assert list(cut) == pytest.approx(list(head), abs=1e-6)
    finally:
        await client.close()
