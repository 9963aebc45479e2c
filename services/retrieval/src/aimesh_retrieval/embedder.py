"""Client of the embedding service (gRPC), with its failures mapped to domain errors."""

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
from aimesh_common.errors import (
    AimeshError,
    DeadlineExceeded,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
)

Vector: TypeAlias = "array[float]"
"""``array("f")``: packed 32-bit floats, a ``Sequence[float]``."""


@dataclass(frozen=True)
class ModelInfo:
    """What the embedding service serves."""

    model: str
    dimension: int
    max_inputs_per_request: int


def _error_for(error: grpc.aio.AioRpcError) -> AimeshError:
    code = error.code()
    details = error.details() or code.name
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded("embedding service did not answer in time")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(f"embedding service overloaded, retry later: {details}")
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"embedding service unavailable: {details}")
    # Anything else is a failure of the dependency, not of the caller's request: the
    # retrieval service only sends non-empty chunks with truncation on.
    return Unavailable(f"embedding service failed ({code.name}): {details}")


class EmbeddingClient:
    """Embeds texts through the embedding service, in batches of ``batch_size``.

    The channel is created at once but connects lazily, so the retrieval service starts
    (and answers NOT_FOUND / INVALID_ARGUMENT) even while the embedding service is down.
    With ``tracer_provider`` every call is a CLIENT span passing the trace on.
    """

    def __init__(
        self,
        addr: str,
        *,
        batch_size: int = 64,
        concurrency: int = 2,
        timeout: float = 60.0,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._channel = create_channel(addr, tracer_provider=tracer_provider)
        self._stub = embedding_pb2_grpc.EmbeddingServiceStub(self._channel)
        self._batch_size = batch_size
        self._concurrency = max(1, concurrency)
        self._timeout = timeout
        self._info: ModelInfo | None = None
        self._info_lock = asyncio.Lock()

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
                    raise _error_for(error) from None
                if reply.dimension < 1:
                    raise FailedPrecondition("embedding service reported no vector dimension")
                self._info = ModelInfo(
                    model=reply.model,
                    dimension=reply.dimension,
                    max_inputs_per_request=reply.max_inputs_per_request,
                )
            return self._info

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One vector per text, in order. Long texts are truncated by the service.

        Vectors are packed 32-bit floats (what the model computes and Milvus stores): a
        job's batch of a thousand vectors holds 1.5 MB, not the 12 MB of Python floats.

        Batches run ``concurrency`` at a time (spread over the embedding replicas by the
        channel's round_robin); the first failure cancels the rest.
        """
        info = await self.info()
        size = self._batch_size
        if info.max_inputs_per_request > 0:
            size = min(size, info.max_inputs_per_request)
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
            raise _error_for(error) from None
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

    async def close(self) -> None:
        await self._channel.close()
