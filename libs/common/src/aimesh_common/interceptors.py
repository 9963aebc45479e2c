"""Server interceptor: domain errors to status codes, plus per-method metrics.

Servicers raise :mod:`aimesh_common.errors`; this interceptor aborts the call with the
matching code and the error's message. Anything unexpected is logged with its traceback
and answered ``INTERNAL`` with a generic message, so no stack trace reaches a caller.

:func:`wrap_rpc_handler` is the kit's one way to wrap a method handler of any kind.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import ServicerContext

from aimesh_common.errors import AimeshError
from aimesh_common.metrics import GRPC_HANDLED, GRPC_LATENCY

log = logging.getLogger("aimesh.grpc")

UnaryBehavior = Callable[[Any, ServicerContext[Any, Any]], Awaitable[Any]]
"""A handler's behaviour answering one response (unary-unary, stream-unary)."""
StreamBehavior = Callable[[Any, ServicerContext[Any, Any]], AsyncIterator[Any]]
"""A handler's behaviour yielding responses (unary-stream, stream-stream)."""

_GENERIC = "internal error; the server logged the details"


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.rpartition("/")
    return service.lstrip("/"), name


def _code_of(context: ServicerContext[Any, Any]) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK if code in (None, 0) else grpc.StatusCode.UNKNOWN


async def _abort_for(error: BaseException, context: ServicerContext[Any, Any], method: str) -> None:
    if isinstance(error, AimeshError):
        await context.abort(error.code, error.message, trailing_metadata=error.trailers)
    log.error("unhandled error in %s", method, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, _GENERIC)


def wrap_rpc_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    *,
    unary: Callable[[UnaryBehavior], UnaryBehavior],
    stream: Callable[[StreamBehavior], StreamBehavior],
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its behaviour wrapped, whatever its kind of call.

    ``unary`` wraps the behaviours that answer one response (unary-unary, stream-unary:
    the first argument is the request or the request iterator), ``stream`` those that
    yield responses (unary-stream, stream-stream). Serializers are kept.
    """
    kinds: tuple[tuple[Any, Any, Callable[..., grpc.RpcMethodHandler[Any, Any]]], ...] = (
        (handler.unary_unary, unary, grpc.unary_unary_rpc_method_handler),
        (handler.unary_stream, stream, grpc.unary_stream_rpc_method_handler),
        (handler.stream_unary, unary, grpc.stream_unary_rpc_method_handler),
        (handler.stream_stream, stream, grpc.stream_stream_rpc_method_handler),
    )
    for behavior, wrap, make in kinds:
        if behavior is not None:
            return make(
                wrap(behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps exceptions to status codes and records call count and latency."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        service, name = _split(method)
        if service.startswith("grpc."):  # health and reflection: leave untouched
            return handler

        @contextlib.asynccontextmanager
        async def handled(context: ServicerContext[Any, Any]) -> AsyncIterator[None]:
            """Abort with the status of what the call raised; count and time the call."""
            start = time.perf_counter()
            try:
                yield
            except Exception as error:
                if isinstance(error, grpc.aio.AbortError):
                    raise
                await _abort_for(error, context, method)
            finally:
                GRPC_LATENCY.labels(service, name).observe(time.perf_counter() - start)
                GRPC_HANDLED.labels(service, name, _code_of(context).name).inc()

        def unary(behavior: UnaryBehavior) -> UnaryBehavior:
            async def mapped(request: Any, context: ServicerContext[Any, Any]) -> Any:
                async with handled(context):
                    return await behavior(request, context)

            return mapped

        def stream(behavior: StreamBehavior) -> StreamBehavior:
            async def mapped(
                request: Any, context: ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                async with handled(context):
                    async for item in behavior(request, context):
                        yield item

            return mapped

        return wrap_rpc_handler(handler, unary=unary, stream=stream)
