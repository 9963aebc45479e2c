"""The embedding client against the real embedding server."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from aimesh_common.errors import Unavailable
from aimesh_retrieval.embedder import EmbeddingClient
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
    client = EmbeddingClient(embedding_addr)
    try:
        info = await client.info()
        assert info.dimension == 384
        assert "MiniLM" in info.model
        assert await client.info() is info
    finally:
        await client.close()


async def test_batches_keep_the_order_of_the_inputs(embedding_addr: str) -> None:
    batched = EmbeddingClient(embedding_addr, batch_size=3, concurrency=3)
    single = EmbeddingClient(embedding_addr, batch_size=1, concurrency=1)
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
    client = EmbeddingClient(f"127.0.0.1:{free_port()}", timeout=5)
    try:
        with pytest.raises(Unavailable, match=r"^embedding service unavailable: "):
            await client.embed(["hello"])
    finally:
        await client.close()
