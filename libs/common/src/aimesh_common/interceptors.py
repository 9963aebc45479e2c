"""Server interceptor: domain errors to status codes, plus per-method metrics.

Servicers raise :mod:`aimesh_common.errors`; this interceptor aborts the call with the
matching code and the error's message. Anything unexpected is logged with its traceback
and answered ``INTERNAL`` with a generic message, so no stack trace reaches a caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import ServicerContext

from aimesh_common.errors import AimeshError
from aimesh_common.metrics import GRPC_HANDLED, GRPC_LATENCY

log = logging.getLogger("aimesh.grpc")

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
        await context.abort(error.code, error.message)
    log.error("unhandled error in %s", method, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, _GENERIC)


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

        def observe(start: float, context: ServicerContext[Any, Any]) -> None:
            GRPC_LATENCY.labels(service, name).observe(time.perf_counter() - start)
            GRPC_HANDLED.labels(service, name, _code_of(context).name).inc()

        if handler.unary_unary is not None:
            inner_uu: Any = handler.unary_unary

            async def unary_unary(request: Any, context: ServicerContext[Any, Any]) -> Any:
                start = time.perf_counter()
                try:
                    return await inner_uu(request, context)
                except Exception as error:
                    if isinstance(error, grpc.aio.AbortError):
                        raise
                    await _abort_for(error, context, method)
                finally:
                    observe(start, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        if handler.unary_stream is not None:
            inner_us: Any = handler.unary_stream

            async def unary_stream(
                request: Any, context: ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                start = time.perf_counter()
                try:
                    async for item in inner_us(request, context):
                        yield item
                except Exception as error:
                    if isinstance(error, grpc.aio.AbortError):
                        raise
                    await _abort_for(error, context, method)
                finally:
                    observe(start, context)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        if handler.stream_unary is not None:
            inner_su: Any = handler.stream_unary

            async def stream_unary(requests: Any, context: ServicerContext[Any, Any]) -> Any:
                start = time.perf_counter()
                try:
                    return await inner_su(requests, context)
                except Exception as error:
                    if isinstance(error, grpc.aio.AbortError):
                        raise
                    await _abort_for(error, context, method)
                finally:
                    observe(start, context)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        return handler
