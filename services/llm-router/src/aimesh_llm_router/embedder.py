"""Client of the embedding service, for the local provider.

Texts are sent in batches no larger than the service accepts (learned once from Info)
and a few batches run concurrently, so replicas behind round_robin share the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import numpy as np
import numpy.typing as npt

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_llm_router.upstream import from_rpc_error

Matrix = npt.NDArray[np.float32]

_FALLBACK_BATCH = 32
_CONCURRENCY = 4


class Embedder:
    """Embeds texts into L2-normalized rows of a matrix."""

    def __init__(
        self, stub: embedding_pb2_grpc.EmbeddingServiceAsyncStub, timeout_seconds: float
    ) -> None:
        self._stub = stub
        self._timeout = timeout_seconds
        self._batch: int | None = None
        self._semaphore = asyncio.Semaphore(_CONCURRENCY)

    async def _batch_size(self) -> int:
        if self._batch is None:
            try:
                info = await self._stub.Info(embedding_pb2.InfoRequest(), timeout=self._timeout)
            except grpc.aio.AioRpcError as error:
                raise from_rpc_error(error, "embedding") from None
            self._batch = int(info.max_inputs_per_request) or _FALLBACK_BATCH
        return self._batch

    async def _embed_batch(self, texts: Sequence[str]) -> Matrix:
        async with self._semaphore:
            try:
                reply = await self._stub.Embed(
                    embedding_pb2.EmbedRequest(inputs=list(texts), truncate=True),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as error:
                raise from_rpc_error(error, "embedding") from None
        return np.asarray([list(item.values) for item in reply.embeddings], dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> Matrix:
        """One normalized row per text, in order. Texts must be non-empty."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        size = await self._batch_size()
        batches = [texts[start : start + size] for start in range(0, len(texts), size)]
        parts = await asyncio.gather(*(self._embed_batch(batch) for batch in batches))
        matrix = np.vstack(parts)
        # The service normalizes already; normalizing again costs nothing and makes the
        # dot products below cosine similarities whatever the backend does.
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        normalized: Matrix = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
        return normalized
