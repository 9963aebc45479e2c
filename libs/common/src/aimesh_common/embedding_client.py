"""The client of the embedding service (``aimesh.embedding.v1``), for every service that
embeds text: retrieval (chunks and queries) and the router's local provider (sentences);
and of its Rerank RPC (retrieval's ``embedding`` reranker).

Texts go in batches no larger than the service accepts (learned once from Info), a few
batches at a time so replicas behind round_robin share the work; the first failure
cancels the rest. The request id and trace context travel with every call through the
channel's interceptors (:func:`aimesh_common.channels.create_channel`).
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import grpc
from opentelemetry.sdk.trace import TracerProvider

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_common.channels import create_channel
from aimesh_common.errors import AimeshError, FailedPrecondition, Unavailable, from_rpc_error

Vector: TypeAlias = "array[float]"
"""``array("f")``: packed 32-bit floats (what the model computes), a ``Sequence[float]``."""

BACKEND = "embedding"
# The embedding service's default AIMESH_MAX_INPUT_CHARS: it refuses longer inputs even with
# truncate. The model sees only its first few hundred tokens, far fewer characters than
# this, so cutting here changes no vector and keeps a long text (a 100,000-character system
# prompt the local provider ranks) from failing the whole call.
MAX_INPUT_CHARS = 32768


@dataclass(frozen=True)
class ModelInfo:
    """What the embedding service serves."""

    model: str
    dimension: int
    max_inputs_per_request: int


class EmbeddingClient:
    """Embeds texts through the embedding service, in batches of at most ``batch_size``.

    The caller owns ``channel`` (it connects lazily, so a service starts, and answers
    what needs no embedding, while the embedding service is down); :meth:`connect`
    creates a client that owns its channel and closes it in :meth:`close`.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout: float = 60.0,
        batch_size: int = 64,
        concurrency: int = 2,
    ) -> None:
        self._channel = channel
        self._owns_channel = False
        self._stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        self._timeout = timeout
        self._batch_size = max(1, batch_size)
        self._concurrency = max(1, concurrency)
        self._info: ModelInfo | None = None
        self._info_lock = asyncio.Lock()

    @classmethod
    def connect(
        cls,
        addr: str,
        *,
        tracer_provider: TracerProvider | None = None,
        timeout: float = 60.0,
        batch_size: int = 64,
        concurrency: int = 2,
    ) -> EmbeddingClient:
        """A client on its own channel to ``addr`` (``tracer_provider`` as for
        :func:`~aimesh_common.channels.create_channel`)."""
        channel = create_channel(addr, tracer_provider=tracer_provider)
        client = cls(channel, timeout=timeout, batch_size=batch_size, concurrency=concurrency)
        client._owns_channel = True
        return client

    async def info(self) -> ModelInfo:
        """The served model (asked once, then cached)."""
        if self._info is not None:
            return self._info
        async with self._info_lock:
            if self._info is None:
                try:
                    reply = await self._stub.Info(
                        embedding_pb2.InfoRequest(), timeout=self._timeout
                    )
                except grpc.aio.AioRpcError as error:
                    raise from_rpc_error(error, BACKEND, caller_errors=False) from None
                if reply.dimension < 1:
                    raise FailedPrecondition("embedding service reported no vector dimension")
                self._info = ModelInfo(
                    model=reply.model,
                    dimension=reply.dimension,
                    max_inputs_per_request=reply.max_inputs_per_request,
                )
            return self._info

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One L2-normalized vector per text, in order. Texts must be non-empty; long
        ones are truncated by the service.

        Vectors are packed 32-bit floats: a batch of a thousand 384-dimensional vectors
        holds 1.5 MB, not the 12 MB of Python floats.
        """
        if not texts:
            return []
        info = await self.info()
        size = self._batch_size
        if info.max_inputs_per_request > 0:
            size = min(size, info.max_inputs_per_request)
        texts = [text[:MAX_INPUT_CHARS] for text in texts]
        batches = [list(texts[start : start + size]) for start in range(0, len(texts), size)]
        if len(batches) == 1:
            return await self._embed_batch(batches[0], info)
        slots = asyncio.Semaphore(self._concurrency)

        async def bounded(batch: list[str]) -> list[Vector]:
            async with slots:
                return await self._embed_batch(batch, info)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(bounded(batch)) for batch in batches]
        except* AimeshError as errors:
            raise errors.exceptions[0] from None
        return [vector for task in tasks for vector in task.result()]

    async def _embed_batch(self, inputs: list[str], info: ModelInfo) -> list[Vector]:
        try:
            reply = await self._stub.Embed(
                embedding_pb2.EmbedRequest(inputs=inputs, truncate=True), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, BACKEND, caller_errors=False) from None
        if len(reply.embeddings) != len(inputs):
            raise Unavailable(
                f"embedding service returned {len(reply.embeddings)} vectors "
                f"for {len(inputs)} inputs"
            )
        vectors: list[Vector] = []
        for embedding in reply.embeddings:
            if len(embedding.values) != info.dimension:
                raise FailedPrecondition(
                    f"embedding service returned a {len(embedding.values)}-dimensional "
                    f"vector; it announced {info.dimension}"
                )
            vectors.append(array("f", embedding.values))
        return vectors

    async def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        """The cross-encoder's relevance score of each text to ``query``, in text order
        (higher is more relevant). Pairs too long for the model are truncated.

        FailedPrecondition when the embedding service has no rerank model.
        """
        if not texts:
            return []
        info = await self.info()
        size = info.max_inputs_per_request or len(texts)
        scores: list[float] = []
        # Scores are per pair, so texts beyond one call's limit go in further calls.
        for start in range(0, len(texts), size):
            batch = list(texts[start : start + size])
            try:
                reply = await self._stub.Rerank(
                    embedding_pb2.RerankRequest(query=query, texts=batch, truncate=True),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    raise FailedPrecondition(
                        f"the embedding service cannot rerank: {error.details()}"
                    ) from None
                raise from_rpc_error(error, BACKEND, caller_errors=False) from None
            batch_scores = [float("nan")] * len(batch)
            for result in reply.results:
                if result.index < len(batch):
                    batch_scores[result.index] = result.score
            if len(reply.results) != len(batch) or any(s != s for s in batch_scores):
                raise Unavailable(
                    f"embedding service returned {len(reply.results)} rerank scores "
                    f"for {len(batch)} texts"
                )
            scores.extend(batch_scores)
        return scores

    async def close(self) -> None:
        """Close the channel if :meth:`connect` created it (else its owner closes it)."""
        if self._owns_channel:
            await self._channel.close()
