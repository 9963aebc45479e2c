"""Traces: spans exported over OTLP/HTTP to a real local collector; context reaches gRPC."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from aimesh_gateway.main import create_app
from aimesh_gateway.state import state_of
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import running, user


@pytest.fixture
def collector() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                received.append(ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


async def test_request_span_is_exported_and_continued_downstream(
    fake_mesh: FakeMesh, collector: tuple[str, list[ExportTraceServiceRequest]]
) -> None:
    endpoint, received = collector
    app = create_app(
        fake_mesh.settings(
            otlp_endpoint=endpoint,
        )
    )
    incoming_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {**user(), "traceparent": f"00-{incoming_trace}-00f067aa0ba902b7-01"}
    async with running(app) as client:
        response = await client.get("/v1/models", headers=headers)
        assert response.status_code == 200
        provider = state_of(app).tracer_provider
        assert provider is not None
        provider.force_flush()
    spans = [
        span
        for export in received
        for resource in export.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    [span] = spans  # one span per request (no per-message send/receive spans)
    assert span.name == "GET /v1/models"
    assert span.trace_id.hex() == incoming_trace  # the caller's trace is continued
    attributes = {a.key: a.value for a in span.attributes}
    # The instrumentation's default HTTP conventions name it http.status_code; with
    # OTEL_SEMCONV_STABILITY_OPT_IN=http it is the stable http.response.status_code.
    status = attributes.get("http.response.status_code") or attributes["http.status_code"]
    assert status.int_value == 200
    assert attributes["http.route"].string_value == "/v1/models"
    # The router received the gateway span as its parent.
    call = fake_mesh.router.recorder.last("ListModels")
    assert call.traceparent is not None
    assert call.traceparent.split("-")[1] == incoming_trace
    assert call.traceparent.split("-")[2] == span.span_id.hex()


async def test_tracing_is_off_by_default(client: Any, fake_mesh: FakeMesh) -> None:
    await client.get("/v1/models", headers=user())
    assert fake_mesh.router.recorder.last("ListModels").traceparent is None
