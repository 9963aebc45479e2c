"""OpenTelemetry traces across the gRPC services: one server span per RPC, context passed on.

Off unless ``AIMESH_OTLP_ENDPOINT`` is set (then spans go to that OTLP/HTTP collector,
``<endpoint>/v1/traces``). A service that traces

* wraps every RPC in a SERVER span, the child of the W3C ``traceparent`` the caller sent in
  its gRPC metadata (the gateway sends one with each backend call), and
* sends the current ``traceparent`` with its own backend calls (channels created with
  ``trace_propagation=True``),

so one request yields one trace: gateway -> llm-router -> retrieval -> embedding.
Health and reflection calls are not traced.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import ClientCallDetails, ServicerContext
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aimesh_common.client_interceptors import details_interceptors, with_metadata

_propagator = TraceContextTextMapPropagator()
_TRACE_KEYS = ("traceparent", "tracestate")


def create_tracer_provider(endpoint: str, service: str) -> TracerProvider:
    """A provider exporting ``service``'s spans in batches to the OTLP/HTTP ``endpoint``."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracer_provider_for(otlp_endpoint: str | None, service: str) -> TracerProvider | None:
    """The provider a service runs with: None (no tracing) unless an endpoint is set."""
    return create_tracer_provider(otlp_endpoint, service) if otlp_endpoint else None


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.rpartition("/")
    return service.lstrip("/"), name


def _parent(metadata: Any) -> Context:
    carrier = {str(key): str(value) for key, value in metadata or () if key in _TRACE_KEYS}
    return _propagator.extract(carrier=carrier)


def _finish(span: Span, context: ServicerContext[Any, Any], error: BaseException | None) -> None:
    code = context.code()
    status = code if isinstance(code, grpc.StatusCode) else None
    if status is None:
        status = grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", status.value[0])
    if status not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
        span.set_status(Status(StatusCode.ERROR, status.name))


class ServerTracingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each RPC in a SERVER span named ``<service>/<method>``, continuing the caller's
    trace. Installed outermost, so the span covers the error mapping and its status."""

    def __init__(self, provider: TracerProvider) -> None:
        self.tracer: Tracer = provider.get_tracer("aimesh.grpc")

    def _start(self, method: str, metadata: Any) -> Any:
        service, name = _split(method)
        return self.tracer.start_as_current_span(
            f"{service}/{name}",
            context=_parent(metadata),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            record_exception=False,
            set_status_on_exception=False,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or _split(method)[0].startswith("grpc."):
            return handler
        metadata = handler_call_details.invocation_metadata
        start = self._start

        if handler.unary_unary is not None:
            inner_uu: Any = handler.unary_unary

            async def unary_unary(request: Any, context: ServicerContext[Any, Any]) -> Any:
                with start(method, metadata) as span:
                    error: BaseException | None = None
                    try:
                        return await inner_uu(request, context)
                    except BaseException as failure:
                        error = failure
                        raise
                    finally:
                        _finish(span, context, error)

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
                with start(method, metadata) as span:
                    error: BaseException | None = None
                    try:
                        async for item in inner_us(request, context):
                            yield item
                    except BaseException as failure:
                        error = failure
                        raise
                    finally:
                        _finish(span, context, error)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        if handler.stream_unary is not None:
            inner_su: Any = handler.stream_unary

            async def stream_unary(requests: Any, context: ServicerContext[Any, Any]) -> Any:
                with start(method, metadata) as span:
                    error: BaseException | None = None
                    try:
                        return await inner_su(requests, context)
                    except BaseException as failure:
                        error = failure
                        raise
                    finally:
                        _finish(span, context, error)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        return handler


def trace_metadata() -> list[tuple[str, str]]:
    """``[("traceparent", ...)]`` for the current span; empty when none is recording."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return list(carrier.items())


def _with_trace(details: ClientCallDetails) -> ClientCallDetails:
    extra = trace_metadata()
    return with_metadata(details, extra) if extra else details


def trace_propagation_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors adding the current span's ``traceparent`` to every outgoing call, of
    each kind (streaming calls included)."""
    return details_interceptors(_with_trace)
