"""OpenTelemetry traces: one server span per request, its context passed to the backends.

Off unless ``AIMESH_OTLP_ENDPOINT`` is set; then spans go to that OTLP/HTTP collector
(``<endpoint>/v1/traces``). The HTTP server span comes from
``opentelemetry-instrumentation-fastapi`` (named ``METHOD <route template>``, attributes
after the library's default HTTP conventions, e.g. ``http.status_code``): an incoming W3C
``traceparent`` is continued, and every gRPC call carries the current ``traceparent`` in its
metadata (:func:`trace_metadata`), so a trace runs gateway -> router -> retrieval ->
embedding.
"""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import TracerProvider

from aimesh_common import tracing


def create_tracer_provider(endpoint: str, service: str = "aimesh-gateway") -> TracerProvider:
    return tracing.create_tracer_provider(endpoint, service)


def instrument_app(app: FastAPI, provider: TracerProvider) -> None:
    """Trace ``app``'s HTTP requests with ``provider`` (not the global one).

    The library's middleware wraps the whole stack, whatever was added before or after,
    so the span covers everything, the request context included. Its per-message
    ``http send``/``http receive`` spans are left out: one span per request.
    """
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, exclude_spans=["receive", "send"]
    )


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """``(("traceparent", ...),)`` for the current span, or nothing when none is recording."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return tuple(carrier.items())
