"""Client channels: plain addresses resolve by DNS so round_robin sees every replica, and
every kind of call carries the caller's trace context and request id."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from aimesh_common.channels import create_channel, target_for
from aimesh_common.request_id import request_id_var


@pytest.mark.parametrize(
    ("addr", "target"),
    [
        ("embedding:50051", "dns:///embedding:50051"),
        ("localhost:50051", "dns:///localhost:50051"),
        ("dns:///embedding:50051", "dns:///embedding:50051"),
        ("ipv4:127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_target_for(addr: str, target: str) -> None:
    assert target_for(addr) == target


async def test_a_peer_that_is_not_up_yet_is_redialled_quickly() -> None:
    """A caller started before its peer (the mesh starting at once, a restarted replica)
    keeps dialling every fraction of a second, not after gRPC's default 1 s, 2.6 s, 5.2 s,
    ...: a peer that comes up late is then found at once."""
    attempts: list[float] = []

    def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(time.monotonic())
        writer.close()  # no HTTP/2 handshake: the connection attempt fails

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        started = time.monotonic()
        channel.get_state(try_to_connect=True)
        await asyncio.sleep(2.0)
    finally:
        await channel.close()
        server.close()
        await server.wait_closed()
    # gRPC's defaults dial at most twice in 2 s (0 s, then 0.8-1.2 s, then >= 2.08 s).
    within = [t for t in attempts if t - started < 2.0]
    assert len(within) >= 4, [round(t - started, 2) for t in attempts]


# ---------------------------------------------------------------- what every call carries

SEEN: list[dict[str, str]] = []


def _record(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    SEEN.append({key: str(value) for key, value in context.invocation_metadata() or ()})


async def _unary_unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    _record(context)
    return request


async def _unary_stream(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    _record(context)
    yield request


async def _stream_unary(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
) -> bytes:
    _record(context)
    return b"".join([r async for r in requests])


async def _stream_stream(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    _record(context)
    async for request in requests:
        yield request


@pytest.fixture
async def echo_addr() -> AsyncIterator[str]:
    """A real grpc.aio server with one method of each kind, recording their metadata."""
    server = grpc.aio.server()
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "UU": grpc.unary_unary_rpc_method_handler(_unary_unary),
        "US": grpc.unary_stream_rpc_method_handler(_unary_stream),
        "SU": grpc.stream_unary_rpc_method_handler(_stream_unary),
        "SS": grpc.stream_stream_rpc_method_handler(_stream_stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Echo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    SEEN.clear()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def _requests() -> AsyncIterator[bytes]:
    yield b"a"


async def test_every_kind_of_call_carries_the_trace_and_the_request_id(echo_addr: str) -> None:
    """The library's aio client interceptors, one per call kind: each kind of call is a
    CLIENT span, child of the caller's span, and sends that span as its traceparent."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    token = request_id_var.set("req-42")
    try:
        async with create_channel(echo_addr, tracer_provider=provider) as channel:
            with provider.get_tracer("test").start_as_current_span("caller") as span:
                unary_unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
                unary_unary = channel.unary_unary("/t.Echo/UU")
                unary_stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes]
                unary_stream = channel.unary_stream("/t.Echo/US")
                stream_unary: grpc.aio.StreamUnaryMultiCallable[bytes, bytes]
                stream_unary = channel.stream_unary("/t.Echo/SU")
                stream_stream: grpc.aio.StreamStreamMultiCallable[bytes, bytes]
                stream_stream = channel.stream_stream("/t.Echo/SS")
                assert await unary_unary(b"a") == b"a"
                assert [reply async for reply in unary_stream(b"a")] == [b"a"]
                assert await stream_unary(_requests()) == b"a"
                assert [reply async for reply in stream_stream(_requests())] == [b"a"]
                trace_id = format(span.get_span_context().trace_id, "032x")
                caller_id = span.get_span_context().span_id
    finally:
        request_id_var.reset(token)
    assert len(SEEN) == 4
    for metadata in SEEN:
        assert metadata["x-request-id"] == "req-42"
        assert trace_id in metadata["traceparent"]
    calls = {s.name: s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT}
    assert sorted(calls) == ["/t.Echo/SS", "/t.Echo/SU", "/t.Echo/US", "/t.Echo/UU"]
    kinds = ("/t.Echo/UU", "/t.Echo/US", "/t.Echo/SU", "/t.Echo/SS")
    for metadata, name in zip(SEEN, kinds, strict=True):
        call = calls[name]
        assert call.parent is not None
        assert call.parent.span_id == caller_id
        # The server sees the call's own span as its parent.
        assert metadata["traceparent"].split("-")[2] == format(call.context.span_id, "016x")


async def test_without_a_provider_calls_carry_no_trace(echo_addr: str) -> None:
    provider = TracerProvider()
    async with create_channel(echo_addr) as channel:
        with provider.get_tracer("test").start_as_current_span("caller"):
            unary_unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
            unary_unary = channel.unary_unary("/t.Echo/UU")
            assert await unary_unary(b"a") == b"a"
    assert "traceparent" not in SEEN[0]
