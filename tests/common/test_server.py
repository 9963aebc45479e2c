"""Server factory: health, reflection, error mapping, metrics, graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc
from aimesh_common import errors
from aimesh_common.server import GrpcServer, build_grpc_server

EMBEDDING = embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name
LLM = llm_pb2.DESCRIPTOR.services_by_name["LLMRouterService"].full_name


class _Embedding(embedding_pb2_grpc.EmbeddingServiceServicer):
    """Behaviour chosen by the first input, to exercise each path of the interceptor."""

    async def Embed(
        self, request: embedding_pb2.EmbedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> embedding_pb2.EmbedResponse:
        first = request.inputs[0] if request.inputs else ""
        if first == "invalid":
            raise errors.InvalidArgument("inputs[0] is not acceptable")
        if first == "missing":
            raise errors.NotFound("collection 'x' not found")
        if first == "crash":
            raise ValueError("secret internal detail")
        if first.startswith("sleep:"):
            await asyncio.sleep(float(first.split(":")[1]))
        return embedding_pb2.EmbedResponse(model="test", dimension=1)


class _Llm(llm_pb2_grpc.LLMRouterServiceServicer):
    async def Generate(
        self, request: llm_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        yield llm_pb2.GenerateResponse(delta="one ")
        if request.model == "fail":
            raise errors.Unavailable("upstream down")
        yield llm_pb2.GenerateResponse(delta="two", finish_reason="stop")


def _build() -> GrpcServer:
    def register(server: grpc.aio.Server) -> None:
        embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(_Embedding(), server)  # type: ignore[abstract]
        llm_pb2_grpc.add_LLMRouterServiceServicer_to_server(_Llm(), server)  # type: ignore[abstract]

    return build_grpc_server(
        host="127.0.0.1", port=0, register=register, service_names=[EMBEDDING, LLM]
    )


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    built = _build()
    await built.start()
    yield built
    await built.stop(0)


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


async def test_binds_a_free_port(server: GrpcServer) -> None:
    assert server.port > 0


async def test_health_serving_for_each_service(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", EMBEDDING, LLM):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in stub.ServerReflectionInfo(iter([request])):
        names = {s.name for s in reply.list_services_response.service}
        break
    assert {EMBEDDING, LLM, "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize(
    ("first", "code", "message"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT, "inputs[0] is not acceptable"),
        ("missing", grpc.StatusCode.NOT_FOUND, "collection 'x' not found"),
        ("crash", grpc.StatusCode.INTERNAL, "internal error; the server logged the details"),
    ],
)
async def test_errors_map_to_status(
    channel: grpc.aio.Channel, first: str, code: grpc.StatusCode, message: str
) -> None:
    stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(embedding_pb2.EmbedRequest(inputs=[first]))
    assert caught.value.code() == code
    assert caught.value.details() == message
    assert "secret internal detail" not in (caught.value.details() or "")


async def test_stream_error_after_first_item(channel: grpc.aio.Channel) -> None:
    stub = llm_pb2_grpc.LLMRouterServiceStub(channel)
    received: list[str] = []

    async def consume() -> None:
        async for item in stub.Generate(llm_pb2.GenerateRequest(model="fail")):
            received.append(item.delta)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await consume()
    assert received == ["one "]
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "upstream down"


async def test_metrics_count_calls_by_code(channel: grpc.aio.Channel) -> None:
    labels = {"grpc_service": EMBEDDING, "grpc_method": "Embed", "grpc_code": "NOT_FOUND"}
    before = REGISTRY.get_sample_value("aimesh_grpc_server_handled_total", labels) or 0.0
    stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Embed(embedding_pb2.EmbedRequest(inputs=["missing"]))
    after = REGISTRY.get_sample_value("aimesh_grpc_server_handled_total", labels)
    assert after == before + 1


async def test_graceful_stop_finishes_in_flight_calls() -> None:
    built = _build()
    await built.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        call = asyncio.ensure_future(stub.Embed(embedding_pb2.EmbedRequest(inputs=["sleep:1"])))
        await asyncio.sleep(0.2)
        stopping = asyncio.ensure_future(built.stop(grace=5))
        await asyncio.sleep(0.1)
        # New work is refused while the in-flight call is allowed to finish.
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        reply = await call
        assert reply.model == "test"
        await stopping


async def _missing_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise errors.NotFound("no such thing")


async def _missing_stream(
    request: Any, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    yield b"first"
    raise errors.NotFound("no such thing")


async def _one_request() -> AsyncIterator[bytes]:
    yield b"a"


async def _drain(call: Any, into: list[bytes]) -> None:
    if hasattr(call, "__aiter__"):
        async for item in call:
            into.append(item)
    else:
        into.append(await call)


async def test_errors_map_to_status_for_every_kind_of_call() -> None:
    """The error interceptor wraps handlers of all four kinds (``wrap_rpc_handler``)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "UU": grpc.unary_unary_rpc_method_handler(_missing_unary),
        "US": grpc.unary_stream_rpc_method_handler(_missing_stream),
        "SU": grpc.stream_unary_rpc_method_handler(_missing_unary),
        "SS": grpc.stream_stream_rpc_method_handler(_missing_stream),
    }

    def register(server: grpc.aio.Server) -> None:
        generic = grpc.method_handlers_generic_handler("t.Kinds", handlers)
        server.add_generic_rpc_handlers((generic,))

    built = build_grpc_server(host="127.0.0.1", port=0, register=register, service_names=[])
    await built.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            raw: Any = channel  # bytes in, bytes out: no stubs, no types
            calls: list[tuple[Any, list[bytes]]] = [
                (raw.unary_unary("/t.Kinds/UU")(b"a"), []),
                # A stream fails after its first item.
                (raw.unary_stream("/t.Kinds/US")(b"a"), [b"first"]),
                (raw.stream_unary("/t.Kinds/SU")(_one_request()), []),
                (raw.stream_stream("/t.Kinds/SS")(_one_request()), [b"first"]),
            ]
            for call, before_failing in calls:
                received: list[bytes] = []
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _drain(call, received)
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND
                assert caught.value.details() == "no such thing"
                assert received == before_failing
    finally:
        await built.stop(0)


async def test_on_start_runs_before_the_server_listens() -> None:
    """A database migration (say) finishes before the first call can arrive; when it fails
    the server is not started."""
    built = _build()
    seen: list[bool] = []

    async def listening(server: GrpcServer) -> bool:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            try:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=0.5
                )
            except grpc.aio.AioRpcError:
                return False
            return True

    async def prepare() -> None:
        seen.append(await listening(built))

    built.on_start.append(prepare)
    await built.start()
    try:
        assert seen == [False]
        assert await listening(built)
    finally:
        await built.stop(0)

    failing = _build()

    async def fail() -> None:
        raise RuntimeError("migration failed")

    failing.on_start.append(fail)
    with pytest.raises(RuntimeError, match="migration failed"):
        await failing.start()
    assert not await listening(failing)
