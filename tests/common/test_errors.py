"""Status codes of a real gRPC call turned back into aimesh errors (from_rpc_error)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_common.errors import (
    AimeshError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    from_rpc_error,
)
from aimesh_common.server import build_grpc_server


class Failing(embedding_pb2_grpc.EmbeddingServiceServicer):
    """Fails Embed with the status code named by its first input, "reason" as details."""

    async def Embed(
        self, request: embedding_pb2.EmbedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> embedding_pb2.EmbedResponse:
        await context.abort(grpc.StatusCode[request.inputs[0]], "reason")
        raise AssertionError("abort returns no more")

    async def Info(
        self, request: embedding_pb2.InfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> embedding_pb2.InfoResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "only Embed fails on purpose")
        raise AssertionError("abort returns no more")

    async def Rerank(
        self, request: embedding_pb2.RerankRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> embedding_pb2.RerankResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "only Embed fails on purpose")
        raise AssertionError("abort returns no more")


@dataclass
class Backend:
    stub: embedding_pb2_grpc.EmbeddingServiceAsyncStub

    async def fail(self, code: str) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.stub.Embed(embedding_pb2.EmbedRequest(inputs=[code]), timeout=10)
        assert caught.value.code().name == code
        return caught.value


@pytest.fixture(scope="module")
async def backend() -> AsyncIterator[Backend]:
    server = build_grpc_server(
        host="127.0.0.1",
        port=0,
        register=lambda s: embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(Failing(), s),
        service_names=["aimesh.embedding.v1.EmbeddingService"],
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield Backend(embedding_pb2_grpc.EmbeddingServiceStub(channel))
    await server.stop(0)


def _mapped(error: AimeshError) -> tuple[type[AimeshError], str]:
    return type(error), error.message


# (code, as a forwarded caller's request, as a request the service built itself)
CASES = [
    ("NOT_FOUND", (NotFound, "reason"), (Unavailable, "retrieval service failed (NOT_FOUND)")),
    (
        "INVALID_ARGUMENT",
        (InvalidArgument, "reason"),
        (Unavailable, "retrieval service failed (INVALID_ARGUMENT)"),
    ),
    (
        "OUT_OF_RANGE",
        (InvalidArgument, "reason"),
        (Unavailable, "retrieval service failed (OUT_OF_RANGE)"),
    ),
    (
        "FAILED_PRECONDITION",
        (FailedPrecondition, "retrieval service: reason"),
        (Unavailable, "retrieval service failed (FAILED_PRECONDITION)"),
    ),
    (
        "RESOURCE_EXHAUSTED",
        (ResourceExhausted, "retrieval service is overloaded, retry later: reason"),
        (ResourceExhausted, "retrieval service is overloaded, retry later: reason"),
    ),
    (
        "DEADLINE_EXCEEDED",
        (DeadlineExceeded, "retrieval service did not answer in time"),
        (DeadlineExceeded, "retrieval service did not answer in time"),
    ),
    (
        "UNAVAILABLE",
        (Unavailable, "retrieval service unavailable: reason"),
        (Unavailable, "retrieval service unavailable: reason"),
    ),
    # The backend's own text of an unexpected failure is logged, never passed on.
    (
        "INTERNAL",
        (Unavailable, "retrieval service failed (INTERNAL)"),
        (Unavailable, "retrieval service failed (INTERNAL)"),
    ),
]


@pytest.mark.parametrize(("code", "forwarded", "own"), CASES)
async def test_codes_map_to_aimesh_errors(
    backend: Backend,
    code: str,
    forwarded: tuple[type[AimeshError], str],
    own: tuple[type[AimeshError], str],
) -> None:
    error = await backend.fail(code)
    assert _mapped(from_rpc_error(error, "retrieval")) == forwarded
    assert _mapped(from_rpc_error(error, "retrieval", caller_errors=False)) == own


async def test_an_unexpected_failure_is_logged_with_its_details(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    error = await backend.fail("DATA_LOSS")
    with caplog.at_level("WARNING", logger="aimesh.errors"):
        mapped = from_rpc_error(error, "embedding")
    assert _mapped(mapped) == (Unavailable, "embedding service failed (DATA_LOSS)")
    [record] = [r for r in caplog.records if r.name == "aimesh.errors"]
    assert record.getMessage() == "embedding service failed"
    assert (record.__dict__["code"], record.__dict__["details"]) == ("DATA_LOSS", "reason")
