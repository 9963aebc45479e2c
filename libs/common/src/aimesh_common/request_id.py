"""Request ids across the services: read from each RPC, logged, and passed on to backends.

The gateway gives every HTTP request an id (its ``X-Request-ID``) and sends it to the
backends as ``x-request-id`` gRPC metadata. Every service built with
:func:`aimesh_common.server.build_grpc_server`

* reads that metadata on each incoming RPC (:class:`RequestIdServerInterceptor`) and, when
  the id is sane (:func:`valid_request_id`), holds it in :data:`request_id_var` for the
  RPC's duration, unary and streaming alike;
* logs it: :func:`aimesh_common.logging.configure_logging` adds the current id to every
  record as ``request_id`` (the gateway's field name);
* sends it on with its own backend calls: channels made by
  :func:`aimesh_common.channels.create_channel` carry
  :func:`request_id_client_interceptors`, which add ``x-request-id`` unless the call
  already sets one.

An RPC without an id, or with one that is not sane (too long, control characters, ...),
runs without one: nothing is generated, so a log line without ``request_id`` means the call
did not come through the gateway (or a caller that names its requests).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any

import grpc
from grpc.aio import ClientCallDetails

from aimesh_common.client_interceptors import details_interceptors, with_metadata

REQUEST_ID_METADATA = "x-request-id"
"""The gRPC metadata key of the request id (gRPC keys are lower case)."""

REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""What an id must look like to be used: short and plain, since it ends up in log lines
and in metadata. The gateway replaces an ``X-Request-ID`` that does not match with a fresh
id; the services ignore such metadata."""

_SANE_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)

request_id_var: ContextVar[str | None] = ContextVar("aimesh_request_id", default=None)
"""The id of the request being handled (an HTTP request in the gateway, an RPC in a
service), or None. Only sane ids are stored in it."""


def valid_request_id(value: str | bytes | None) -> str | None:
    """``value`` when it is a sane request id, else None.

    Matched in full, so a trailing newline (which ``$`` alone would let through) fails.
    """
    if isinstance(value, bytes):  # "-bin" keys aside, gRPC hands over str; be lenient
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return None


def current_request_id() -> str | None:
    """The id of the request being handled, or None outside one (or when it had none)."""
    return request_id_var.get()


def request_id_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The sane ``x-request-id`` of an RPC's invocation metadata (the first one), or None."""
    for key, value in metadata or ():
        if key == REQUEST_ID_METADATA:
            return valid_request_id(value)
    return None


class RequestIdServerInterceptor(grpc.aio.ServerInterceptor):
    """Holds each RPC's sane ``x-request-id`` in :data:`request_id_var`.

    gRPC calls the interceptors of an RPC in a fresh :class:`contextvars.Context` and runs
    the handler in that same Context (the documented way for interceptors to hand state
    to handlers), so the id set here is seen by the other interceptors and the handler,
    unary or streaming (async generators included), and by tasks they start, and by
    nothing else: no wrapper and no reset are needed, and a call without an id sees none.
    Installed first, so everything the other interceptors log about the call (an unhandled
    error's traceback, say) carries the id too.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        request_id = request_id_from_metadata(handler_call_details.invocation_metadata)
        if request_id is not None:
            request_id_var.set(request_id)
        return await continuation(handler_call_details)


def _has_request_id(metadata: Iterable[tuple[str, Any]] | None) -> bool:
    return any(key == REQUEST_ID_METADATA for key, _ in metadata or ())


def _with_request_id(details: ClientCallDetails) -> ClientCallDetails:
    """``details`` plus the current request id, unless there is none or it names one."""
    request_id = request_id_var.get()
    if request_id is None or _has_request_id(details.metadata):
        return details
    return with_metadata(details, [(REQUEST_ID_METADATA, request_id)])


def request_id_client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors adding the current request id as ``x-request-id`` to every outgoing
    call, of each kind, made on a channel that has them.

    Calls made outside a request (no current id) and calls that set ``x-request-id``
    themselves (the gateway does) are sent unchanged.
    """
    return details_interceptors(_with_request_id)
