"""Prometheus metrics of the HTTP API.

Each app gets its own registry (so several apps in one process, as in tests, do not clash).
Requests are labelled by route template (``/v1/collections/{collection}/search``), never by
raw path, so label cardinality stays bounded whatever callers send.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
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

        self.rate_limited = Counter(
            "aimesh_rate_limited_total",
            "Requests refused with 429 by the rate limiter.",
            registry=self.registry,
        )
        self.limiter_errors = Counter(
            "aimesh_rate_limit_store_errors_total",
            "Rate-limit checks that could not reach the shared store (policy applied).",
            registry=self.registry,
        )
        self.cache = Counter(
            "aimesh_cache_requests_total",
            "Response cache lookups, by route and result (hit, miss, bypass, error).",
            ["route", "result"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "aimesh_upstream_errors_total",
            "gRPC calls to a backend that ended in an error, by backend service and status code.",
            ["service", "code"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "aimesh_tokens_total",
            "Tokens spent, by kind (prompt, completion).",
            ["kind"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _service_of(method: str | bytes) -> str:
    """``/aimesh.llm.v1.LLMRouterService/Answer`` -> ``aimesh.llm.v1.LLMRouterService``."""
    text = method.decode() if isinstance(method, bytes) else method
    return text.lstrip("/").partition("/")[0]


class UpstreamErrorInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
):
    """Counts backend calls that end in a non-OK status (calls we cancel are not errors).

    A unary call is awaited here (the caller's own await then returns the finished call's
    response): no extra task on the hot path. A stream's status is awaited in a background
    task so the stream is relayed as it arrives.
    """

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._watchers: set[asyncio.Task[None]] = set()

    def _count(self, method: str | bytes, code: grpc.StatusCode) -> None:
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
            self.counter.labels(_service_of(method), code.name).inc()

    async def _watch(self, method: str | bytes, call: Any) -> None:
        self._count(method, await call.code())

    def _follow(self, method: str | bytes, call: Any) -> Any:
        task = asyncio.ensure_future(self._watch(method, call))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        return call

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        try:
            await call
        except grpc.aio.AioRpcError as error:
            self._count(client_call_details.method, error.code())
        return call

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return self._follow(
            client_call_details.method, await continuation(client_call_details, request)
        )
