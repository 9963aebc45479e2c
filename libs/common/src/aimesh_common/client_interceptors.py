"""Client interceptors that rewrite each outgoing call's details (its metadata).

A grpc.aio channel files each interceptor under the first kind of call it implements only
(unary-unary, unary-stream, stream-unary, stream-stream, in that order), so one class
implementing all four would see unary-unary calls alone. :func:`details_interceptors`
returns one interceptor per kind around one rewrite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from grpc.aio import ClientCallDetails

Rewrite = Callable[[ClientCallDetails], ClientCallDetails]


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, rewrite: Rewrite) -> None:
        self.rewrite = rewrite

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self.rewrite(client_call_details), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, rewrite: Rewrite) -> None:
        self.rewrite = rewrite

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self.rewrite(client_call_details), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, rewrite: Rewrite) -> None:
        self.rewrite = rewrite

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: ClientCallDetails, request_iterator: Any
    ) -> Any:
        return await continuation(self.rewrite(client_call_details), request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, rewrite: Rewrite) -> None:
        self.rewrite = rewrite

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: ClientCallDetails, request_iterator: Any
    ) -> Any:
        return await continuation(self.rewrite(client_call_details), request_iterator)


def details_interceptors(rewrite: Rewrite) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors applying ``rewrite`` to the details of every call, of each kind."""
    return [
        _UnaryUnary(rewrite),
        _UnaryStream(rewrite),
        _StreamUnary(rewrite),
        _StreamStream(rewrite),
    ]


def with_metadata(
    details: ClientCallDetails, extra: list[tuple[str, str]] | tuple[tuple[str, str], ...]
) -> ClientCallDetails:
    """``details`` with ``extra`` metadata appended."""
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *extra)
    return ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )
