"""OpenTelemetry traces: one server span per request, its context passed to the backends.

Off unless ``AIMESH_OTLP_ENDPOINT`` is set; then spans go to that OTLP/HTTP collector
(``<endpoint>/v1/traces``). An incoming W3C ``traceparent`` is continued, and every gRPC call
carries the current ``traceparent`` in its metadata, so a trace runs gateway -> router ->
retrieval -> embedding wherever those services continue it.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aimesh_common import tracing
from aimesh_gateway.observability.middleware import route_template

_propagator = TraceContextTextMapPropagator()


def create_tracer_provider(endpoint: str, service: str = "aimesh-gateway") -> TracerProvider:
    return tracing.create_tracer_provider(endpoint, service)


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """``(("traceparent", ...),)`` for the current span, or nothing when none is recording."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return tuple(carrier.items())


class TracingMiddleware:
    """Wraps each HTTP request in a SERVER span named ``METHOD <route template>``."""

    def __init__(self, app: ASGIApp, provider: TracerProvider) -> None:
        self.app = app
        self.tracer = provider.get_tracer("aimesh.gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        parent = _propagator.extract(
            carrier={k: headers[k] for k in ("traceparent",) if k in headers}
        )
        method = str(scope.get("method", ""))
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": scope["path"]}
        with self.tracer.start_as_current_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:

            async def send_recording(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, send_recording)
            finally:
                route = route_template(scope)
                span.set_attribute("http.route", route)
                span.update_name(f"{method} {route}")
