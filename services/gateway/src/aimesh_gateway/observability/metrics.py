"""Prometheus metrics of the HTTP API.

Each app gets its own registry (so several apps in one process, as in tests, do not clash).
Requests are labelled by route template (``/v1/collections/{collection}/search``), never by
raw path, so label cardinality stays bounded whatever callers send.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

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
            "Requests refused with 429 by the rate limiter, by the limit that refused "
            "(rpm, tpm; budget: a hard budget in money) and its scope (key, user: one "
            "caller; tenant: all of a tenant).",
            ["limit", "scope"],
            registry=self.registry,
        )
        self.budget_spend_ratio = Gauge(
            "aimesh_budget_spend_ratio",
            "Spend of a budget's current window over its limit (1: spent), as this replica "
            "last saw it; by budget id, tenant, scope, window and mode.",
            ["budget", "tenant", "scope", "window", "mode"],
            registry=self.registry,
        )
        self.budget_alerts = Counter(
            "aimesh_budget_alerts_total",
            "Budgets whose spend crossed an alert threshold (percent of the limit), by "
            "threshold, scope and mode; counted once, by the replica whose call crossed it.",
            ["threshold", "scope", "mode"],
            registry=self.registry,
        )
        self.budget_store_errors = Counter(
            "aimesh_budget_store_errors_total",
            "Budget reservations or settlements that could not reach Redis (policy applied).",
            registry=self.registry,
        )
        self.budget_webhooks = Counter(
            "aimesh_budget_webhooks_total",
            "Budget alert webhooks, by result (sent, failed after retries).",
            ["result"],
            registry=self.registry,
        )
        self.limiter_errors = Counter(
            "aimesh_rate_limit_store_errors_total",
            "Rate-limit checks that could not reach the shared store (policy applied).",
            registry=self.registry,
        )
        self.limiter_state = Gauge(
            "aimesh_rate_limit_local_entries",
            "In-process rate-limit state, by kind: bucket (the in-process limiter, one per "
            "caller active within a minute) and lease (requests reserved from Redis).",
            ["kind"],
            registry=self.registry,
        )
        self.degraded = Gauge(
            "aimesh_gateway_degraded",
            "1 while a component is unreachable and the gateway runs without it (redis: "
            "limits fail open or closed by rate_limit_redis_failure, cache off; budgets: their "
            "Redis is unreachable, hard budgets fail per budget_redis_failure; a backend: its "
            "routes answer 503), else 0; refreshed by every /readyz check.",
            ["component"],
            registry=self.registry,
        )
        self.cache = Counter(
            "aimesh_cache_requests_total",
            "Response cache lookups, by route and result (hit, miss, bypass, error; "
            "too_large: a response over cache_max_entry_bytes, not stored).",
            ["route", "result"],
            registry=self.registry,
        )
        self.cache_entries = Gauge(
            "aimesh_cache_entries",
            "Entries in the in-process response cache (0 when the cache is in Redis).",
            registry=self.registry,
        )
        self.cache_bytes = Gauge(
            "aimesh_cache_bytes",
            "Bytes held by the in-process response cache: keys, values and per-entry "
            "overhead; bounded by cache_max_bytes.",
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

        # The labelled children of the request metrics, looked up once per label set (routes
        # are templates, so the set is bounded).
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        children = self._children.get((method, route, status))
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[(method, route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _service_of(method: str | bytes) -> str:
    """``/aimesh.llm.v1.LLMRouterService/Answer`` -> ``aimesh.llm.v1.LLMRouterService``."""
    text = method.decode() if isinstance(method, bytes) else method
    return text.lstrip("/").partition("/")[0]


class UpstreamErrors:
    """Counts backend calls that end in a non-OK status (calls we cancel are not errors).

    Unary calls are counted by :meth:`channel`'s stubs, which await each call in a coroutine
    of the caller: a client interceptor would do it too, but grpc.aio runs every intercepted
    call in a task of its own. Streams go through :meth:`interceptor`, whose task awaits the
    status in the background so the stream is relayed as it arrives.
    """

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def count(self, method: str | bytes, code: grpc.StatusCode) -> None:
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
            self.counter.labels(_service_of(method), code.name).inc()

    def channel(self, channel: grpc.aio.Channel) -> grpc.aio.Channel:
        """``channel`` for stubs: its unary-unary calls count their errors."""
        return cast(grpc.aio.Channel, _CountingChannel(channel, self))

    def interceptor(self) -> grpc.aio.ClientInterceptor:
        return _StreamErrorInterceptor(self)


class _CountingChannel:
    """Passes everything to the channel; its unary-unary multicallables count errors."""

    def __init__(self, channel: grpc.aio.Channel, errors: UpstreamErrors) -> None:
        self._channel = channel
        self._errors = errors

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _CountedUnaryUnary:
        return _CountedUnaryUnary(
            self._channel.unary_unary(method, *args, **kwargs), method, self._errors
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


class _CountedUnaryUnary:
    def __init__(self, inner: Any, method: str, errors: UpstreamErrors) -> None:
        self._inner = inner
        self._method = method
        self._errors = errors

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        # The call starts now, as a plain stub call does; the caller awaits its outcome.
        return self._outcome(self._inner(request, **kwargs))

    async def _outcome(self, call: Any) -> Any:
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            self._errors.count(self._method, error.code())
            raise


class _StreamErrorInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, errors: UpstreamErrors) -> None:
        self.errors = errors
        self._watchers: set[asyncio.Task[None]] = set()

    async def _watch(self, method: str | bytes, call: Any) -> None:
        self.errors.count(method, await call.code())

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        task = asyncio.ensure_future(self._watch(client_call_details.method, call))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        return call
