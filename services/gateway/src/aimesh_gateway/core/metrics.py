"""Prometheus metrics of the HTTP API.

Each app gets its own registry (so several apps in one process, as in tests, do not clash).
Requests are labelled by route template (``/v1/collections/{collection}/search``), never by
raw path, so label cardinality stays bounded whatever callers send.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

UNMATCHED_ROUTE = "<unmatched>"


class HttpMetrics:
    """Request count, latency and in-flight requests, by method, route template and status."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter(
            "aimesh_http_requests_total",
            "HTTP requests completed, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aimesh_http_request_duration_seconds",
            "Time from receiving an HTTP request to finishing its response.",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "aimesh_http_requests_in_flight",
            "HTTP requests being handled.",
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
