"""OpenTelemetry traces across the gRPC services, from ``opentelemetry-instrumentation-grpc``.

Off unless ``AIMESH_OTLP_ENDPOINT`` is set (then spans go to that OTLP/HTTP collector,
``<endpoint>/v1/traces``). A service that traces has its own provider (never the global
one) and hands it to

* :func:`aimesh_common.server.build_grpc_server`, which installs the library's aio server
  interceptor: every RPC is a SERVER span named ``/<service>/<method>``, the child of the
  W3C ``traceparent`` the caller sent in its gRPC metadata, and
* :func:`aimesh_common.channels.create_channel`, which installs the library's aio client
  interceptors (one per call kind, streaming calls included): every backend call is a
  CLIENT span whose ``traceparent`` goes along with the call,

so one request yields one trace: gateway -> llm-router -> retrieval -> embedding.
Health and reflection calls (services ``grpc.*``) are not traced.
"""

from __future__ import annotations

import grpc
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.instrumentation.grpc.filters import negate, service_prefix
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

# Health checks and reflection are infrastructure, not requests: no spans.
_TRACED = negate(service_prefix("grpc."))


def create_tracer_provider(endpoint: str, service: str) -> TracerProvider:
    """A provider exporting ``service``'s spans in batches to the OTLP/HTTP ``endpoint``."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracer_provider_for(otlp_endpoint: str | None, service: str) -> TracerProvider | None:
    """The provider a service runs with: None (no tracing) unless an endpoint is set."""
    return create_tracer_provider(otlp_endpoint, service) if otlp_endpoint else None


def server_tracing_interceptor(provider: TracerProvider) -> grpc.aio.ServerInterceptor:
    """The library's aio server interceptor: a SERVER span per RPC, continuing the caller's
    trace. Its status is ERROR for the codes the OpenTelemetry conventions count as server
    faults (INTERNAL, UNAVAILABLE, UNKNOWN, ...); every span has ``rpc.grpc.status_code``."""
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(
        tracer_provider=provider, filter_=_TRACED
    )
    return interceptor


def client_tracing_interceptors(provider: TracerProvider) -> list[grpc.aio.ClientInterceptor]:
    """The library's aio client interceptors: a CLIENT span per call, its ``traceparent``
    added to the call's metadata. One interceptor per call kind (a grpc.aio channel files
    an interceptor under the first kind it implements only), so streaming calls carry the
    trace too."""
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(
        tracer_provider=provider, filter_=_TRACED
    )
    return interceptors
