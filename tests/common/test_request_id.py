"""Request ids over real gRPC: read from ``x-request-id`` by the server factory's
interceptors, held for unary and streaming handlers, put on their log records, and sent on
by channels from ``create_channel``.

The servers are real grpc.aio servers built with ``build_grpc_server``; their handlers are
generic (raw bytes), one per RPC kind, and answer the request id they see.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from aimesh_common.channels import create_channel
from aimesh_common.logging import JsonFormatter, RequestIdLogFilter
from aimesh_common.request_id import (
    REQUEST_ID_METADATA,
    request_id_from_metadata,
    request_id_var,
    valid_request_id,
)
from aimesh_common.server import GrpcServer, build_grpc_server

SERVICE = "aimesh.test.v1.Echo"
LOGGER = "aimesh.test.echo"
log = logging.getLogger(LOGGER)


def _seen() -> bytes:
    """What a handler answers: the request id it runs under ("-" for none)."""
    return (request_id_var.get() or "-").encode()


def _metadata_ids(context: grpc.aio.ServicerContext[Any, Any]) -> list[str]:
    return [
        str(value)
        for key, value in context.invocation_metadata() or ()
        if key == REQUEST_ID_METADATA
    ]


async def _unary_unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    if request == b"crash":
        raise ValueError("boom")
    if request == b"wire":  # the raw metadata, to show what a caller sent
        return ",".join(_metadata_ids(context)).encode()
    log.info("unary unary")
    return _seen()


async def _unary_stream(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    for index in range(3):
        log.info("unary stream %d", index)
        yield _seen()


async def _stream_unary(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
) -> bytes:
    async for _ in requests:
        log.info("stream unary")
    return _seen()


async def _stream_stream(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    async for _ in requests:
        log.info("stream stream")
        yield _seen()


def _register(server: grpc.aio.Server) -> None:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "UnaryUnary": grpc.unary_unary_rpc_method_handler(_unary_unary),
        "UnaryStream": grpc.unary_stream_rpc_method_handler(_unary_stream),
        "StreamUnary": grpc.stream_unary_rpc_method_handler(_stream_unary),
        "StreamStream": grpc.stream_stream_rpc_method_handler(_stream_stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[GrpcServer]:
    built = build_grpc_server(host="127.0.0.1", port=0, register=_register, service_names=[])
    await built.start()
    yield built
    await built.stop(0)


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    """A plain channel: only what each call passes is sent."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """JSON log lines of the handlers and of the interceptors, as a service writes them
    (JsonFormatter behind the filter configure_logging installs)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    handler.addFilter(RequestIdLogFilter())
    loggers = [logging.getLogger(LOGGER), logging.getLogger("aimesh.grpc")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield stream
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _with_id(request_id: str) -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID_METADATA, request_id),)


def _unary(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        f"/{SERVICE}/UnaryUnary"
    )
    return method


async def _call(
    channel: grpc.aio.Channel, kind: str, metadata: tuple[tuple[str, str], ...] = ()
) -> list[bytes]:
    """Call the ``kind`` RPC (two messages in for client streams); the replies."""
    method = f"/{SERVICE}/{kind}"
    if kind == "UnaryUnary":
        return [await _unary(channel)(b"hi", metadata=metadata)]
    if kind == "UnaryStream":
        unary_stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(method)
        return [reply async for reply in unary_stream(b"hi", metadata=metadata)]
    if kind == "StreamUnary":
        stream_unary: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(method)
        return [await stream_unary(iter([b"a", b"b"]), metadata=metadata)]
    stream_stream: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(method)
    return [reply async for reply in stream_stream(iter([b"a", b"b"]), metadata=metadata)]


KINDS = ["UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream"]


@pytest.mark.parametrize("kind", KINDS)
async def test_handlers_and_their_logs_carry_the_request_id(
    channel: grpc.aio.Channel, lines: io.StringIO, kind: str
) -> None:
    replies = await _call(channel, kind, _with_id("req-42.a:b"))
    assert replies
    assert set(replies) == {b"req-42.a:b"}
    records = parsed(lines)
    assert records
    assert all(record["request_id"] == "req-42.a:b" for record in records)
    assert {record["logger"] for record in records} == {LOGGER}


@pytest.mark.parametrize("kind", KINDS)
async def test_without_an_id_there_is_none(
    channel: grpc.aio.Channel, lines: io.StringIO, kind: str
) -> None:
    # A call with an id first: what it set must not leak into the next call.
    await _call(channel, kind, _with_id("earlier-1"))
    lines.truncate(0)
    lines.seek(0)
    replies = await _call(channel, kind)
    assert set(replies) == {b"-"}
    records = parsed(lines)
    assert records
    assert all("request_id" not in record for record in records)


@pytest.mark.parametrize(
    "incoming",
    ["x" * 300, "x" * 129, "has space", "-leading", "a/b", "semi;colon", "%0Aencoded"],
)
async def test_an_insane_id_is_not_used(
    channel: grpc.aio.Channel, lines: io.StringIO, incoming: str
) -> None:
    assert await _call(channel, "UnaryUnary", _with_id(incoming)) == [b"-"]
    [record] = parsed(lines)
    assert "request_id" not in record


async def test_the_longest_sane_id_is_used(channel: grpc.aio.Channel) -> None:
    longest = "a" + "b" * 127
    assert await _call(channel, "UnaryUnary", _with_id(longest)) == [longest.encode()]


@pytest.mark.parametrize("value", ["a\nb", "abc\n", "abc\r\n", "\tabc", "ü", "", b"\xff", None])
def test_control_characters_and_non_ascii_are_insane(value: str | bytes | None) -> None:
    # gRPC clients refuse to send most of these; a peer that does is still ignored.
    assert valid_request_id(value) is None
    assert request_id_from_metadata([(REQUEST_ID_METADATA, value or "")]) is None


def test_the_first_id_of_the_metadata_counts() -> None:
    metadata = [("other", "x"), (REQUEST_ID_METADATA, "one"), (REQUEST_ID_METADATA, "two")]
    assert request_id_from_metadata(metadata) == "one"
    assert request_id_from_metadata([(REQUEST_ID_METADATA, b"raw-7")]) == "raw-7"
    assert request_id_from_metadata(None) is None


async def test_an_unhandled_error_is_logged_with_the_request_id(
    channel: grpc.aio.Channel, lines: io.StringIO
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(channel)(b"crash", metadata=_with_id("err-9"))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    [record] = parsed(lines)
    assert record["logger"] == "aimesh.grpc"
    assert record["request_id"] == "err-9"
    assert "ValueError: boom" in record["exc"]


@pytest.fixture
async def forwarding(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    channel = create_channel(f"127.0.0.1:{server.port}")
    yield channel
    await channel.close()


@pytest.fixture
def current_id() -> Iterator[str]:
    """The test runs as if it handled the request ``fwd-1``."""
    token = request_id_var.set("fwd-1")
    yield "fwd-1"
    request_id_var.reset(token)


@pytest.mark.parametrize("kind", KINDS)
async def test_create_channel_forwards_the_current_id(
    forwarding: grpc.aio.Channel, current_id: str, kind: str
) -> None:
    replies = await _call(forwarding, kind)
    assert set(replies) == {current_id.encode()}


async def test_an_id_the_call_sets_wins_and_is_sent_once(
    forwarding: grpc.aio.Channel, current_id: str
) -> None:
    wire = _unary(forwarding)
    assert await wire(b"wire") == current_id.encode()
    assert await wire(b"wire", metadata=_with_id("explicit-2")) == b"explicit-2"
    assert await wire(b"wire", metadata=(("other", "v"),)) == current_id.encode()


async def test_nothing_is_forwarded_outside_a_request(forwarding: grpc.aio.Channel) -> None:
    assert request_id_var.get() is None
    assert await _unary(forwarding)(b"wire") == b""


async def test_forwarding_can_be_turned_off(server: GrpcServer, current_id: str) -> None:
    channel = create_channel(f"127.0.0.1:{server.port}", request_id_propagation=False)
    try:
        assert await _unary(channel)(b"wire") == b""
    finally:
        await channel.close()
