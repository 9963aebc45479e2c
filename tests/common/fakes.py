"""For the tests showing that services log request ids and pass them on: a real downstream
EmbeddingService recording the request id of every call it gets, and a log capture that
adds request ids as a service's log handler does."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_common.logging import RequestIdLogFilter
from aimesh_common.request_id import REQUEST_ID_METADATA, current_request_id
from aimesh_common.server import build_grpc_server


@dataclass(frozen=True)
class Seen:
    """One call a recording server got."""

    method: str
    sent: tuple[str, ...]  # the x-request-id values of the call's metadata
    held: str | None  # the request id the handler ran under (read by the interceptors)


def record(method: str, context: grpc.aio.ServicerContext[Any, Any], into: list[Seen]) -> None:
    sent = tuple(
        str(value)
        for key, value in context.invocation_metadata() or ()
        if key == REQUEST_ID_METADATA
    )
    into.append(Seen(method, sent, current_request_id()))


@dataclass
class RecordingEmbedding(embedding_pb2_grpc.EmbeddingServiceServicer):
    """Answers Info, Embed (the same unit vector for every text) and Rerank (longer texts
    first) and records each call."""

    dimension: int = 8
    seen: list[Seen] = field(default_factory=list)

    async def Info(
        self, request: embedding_pb2.InfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> embedding_pb2.InfoResponse:
        record("Info", context, self.seen)
        return embedding_pb2.InfoResponse(
            model="recording",
            dimension=self.dimension,
            max_input_tokens=256,
            max_inputs_per_request=64,
            backend="none",
        )

    async def Embed(
        self, request: embedding_pb2.EmbedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> embedding_pb2.EmbedResponse:
        record("Embed", context, self.seen)
        vector = [1.0] + [0.0] * (self.dimension - 1)
        return embedding_pb2.EmbedResponse(
            embeddings=[embedding_pb2.Embedding(values=vector) for _ in request.inputs],
            model="recording",
            dimension=self.dimension,
        )

    async def Rerank(
        self, request: embedding_pb2.RerankRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> embedding_pb2.RerankResponse:
        """Scores each text by its length, answered best first (as the real service)."""
        record("Rerank", context, self.seen)
        order = sorted(range(len(request.texts)), key=lambda i: -len(request.texts[i]))
        return embedding_pb2.RerankResponse(
            results=[
                embedding_pb2.RerankResult(index=i, score=len(request.texts[i])) for i in order
            ],
            model="recording",
        )


@asynccontextmanager
async def recording_embedding() -> AsyncIterator[tuple[RecordingEmbedding, str]]:
    """A RecordingEmbedding served by ``build_grpc_server`` on a free port, and its address."""
    servicer = RecordingEmbedding()
    server = build_grpc_server(
        host="127.0.0.1",
        port=0,
        register=lambda s: embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(servicer, s),
        service_names=["aimesh.embedding.v1.EmbeddingService"],
    )
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        # The filter configure_logging puts on every service's handler.
        self.addFilter(RequestIdLogFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_records(*names: str, level: int = logging.INFO) -> Iterator[list[logging.LogRecord]]:
    """The records of the loggers ``names`` (and their children) made inside the block."""
    handler = _Records()
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
    try:
        yield handler.records
    finally:
        for logger, previous in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(previous)
