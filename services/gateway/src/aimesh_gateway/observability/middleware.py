"""Pure ASGI middleware: the request context (id, access log, metrics, security headers,
last-resort 500) and the dropping of cached answers about a collection once it was written.

Pure ASGI rather than ``BaseHTTPMiddleware`` so streamed responses (SSE) pass through
untouched.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aimesh_common.logging import RequestIdLogFilter as RequestIdLogFilter
from aimesh_common.request_id import request_id_var as request_id_var
from aimesh_common.request_id import valid_request_id
from aimesh_gateway.core.errors import GENERIC_INTERNAL, PROBLEM_MEDIA_TYPE, path_problem_body
from aimesh_gateway.limits.http import CLIENT_CLOSED_REQUEST
from aimesh_gateway.observability.metrics import UNMATCHED_ROUTE, HttpMetrics

access_log = logging.getLogger("aimesh.gateway.access")
log = logging.getLogger("aimesh.gateway")

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming request id is propagated only when it is short and plain (it ends up in logs
# and gRPC metadata; aimesh_common.request_id.REQUEST_ID_PATTERN, the rule the backends
# apply too); anything else is replaced by a fresh one.
# Probes are logged at DEBUG so they do not drown the access log; so is "not ready yet" (a
# 503 from /readyz is its normal answer while the backends start, not an error).
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_NOT_READY_PATH = "/readyz"

# Sent on every response: an API never needs to be framed, sniffed or cached by a proxy unless
# a route says otherwise.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Cache-Control", "no-store"),
)
# The same, encoded once, as ASGI header pairs (lower-case names).
_RAW_SECURITY_HEADERS = tuple(
    (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in SECURITY_HEADERS
)
_RAW_CSP = b"content-security-policy"
_RAW_REQUEST_ID = REQUEST_ID_HEADER.lower().encode("latin-1")


def route_template(scope: Scope) -> str:
    """The matched route's path template, or a fixed label when nothing matched.

    API routes put themselves in ``scope["route"]``; plain Starlette routes (the OpenAPI and
    docs pages) do not, but have no path parameters, so their path is their template.
    """
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if isinstance(template, str):
        return template
    path = scope.get("path")
    app = scope.get("app")
    if isinstance(path, str) and scope.get("endpoint") is not None and app is not None:
        for candidate in getattr(app, "routes", ()):
            if isinstance(candidate, Route) and candidate.path_format == path:
                return path
    return UNMATCHED_ROUTE


def choose_request_id(incoming: str | None) -> str:
    return valid_request_id(incoming) or secrets.token_hex(16)


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of the (lower-case) header ``name``, read from the raw ASGI list."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class RequestContextMiddleware:
    """Gives each request an id (echoed in ``X-Request-ID``), records metrics and one access
    log line, and turns any exception that escaped the handlers into a 500 problem."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = choose_request_id(_header(scope, _RAW_REQUEST_ID))
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        status = 500
        started = False
        docs_page = str(scope.get("path", "")).startswith(("/docs", "/redoc"))

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                # Appended to the raw header list (the response's own names win): cheaper
                # than MutableHeaders, which scans the list for every name it sets.
                raw: list[tuple[bytes, bytes]] = list(message.get("headers", ()))
                present = {name.lower() for name, _ in raw}
                if _RAW_REQUEST_ID in present:  # ours is the one the logs carry
                    raw = [pair for pair in raw if pair[0].lower() != _RAW_REQUEST_ID]
                raw.append((_RAW_REQUEST_ID, request_id.encode("latin-1")))
                rate_limit = state.get("rate_limit")
                if rate_limit is not None:
                    limit, remaining, reset = rate_limit
                    raw += (
                        (b"ratelimit-limit", str(limit).encode()),
                        (b"ratelimit-remaining", str(remaining).encode()),
                        (b"ratelimit-reset", str(reset).encode()),
                    )
                for name, value in _RAW_SECURITY_HEADERS:
                    if name == _RAW_CSP and docs_page:
                        continue  # the interactive docs load their scripts from a CDN
                    if name not in present:
                        raw.append((name, value))
                message["headers"] = raw
            await send(message)

        start = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
            if 200 <= status < 300:
                await _invalidate_written_collection(scope)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if started:
                raise
            await self._internal_error(scope, request_id)(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            if state.get("client_closed"):
                status = CLIENT_CLOSED_REQUEST
            self._record(scope, status, time.perf_counter() - start, request_id)
            request_id_var.reset(token)

    @staticmethod
    def _internal_error(scope: Scope, request_id: str) -> JSONResponse:
        body = path_problem_body(
            500, GENERIC_INTERNAL, path=scope.get("path"), request_id=request_id
        )
        return JSONResponse(body, status_code=500, media_type=PROBLEM_MEDIA_TYPE)

    def _record(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        method = str(scope.get("method", ""))
        route = route_template(scope)
        self.metrics.observe(method, route, status, seconds)
        level = (
            logging.DEBUG
            if scope.get("path") in _QUIET_PATHS
            and (status < 500 or scope.get("path") == _NOT_READY_PATH)
            else logging.INFO
        )
        if not access_log.isEnabledFor(level):
            return
        # One line per request: the record is made directly (Logger.log would also walk the
        # stack to find the caller, which no access-log field uses).
        record = access_log.makeRecord(
            access_log.name,
            level,
            __file__,
            0,
            "%s %s %d",
            (method, route, status),
            None,
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "tenant": scope.get("state", {}).get("tenant_id"),
                "request_id": request_id,
            },
        )
        access_log.handle(record)


_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_READ_ONLY_SUFFIXES = ("/search", "/ask", "/summarize")


async def _invalidate_written_collection(scope: Scope) -> None:
    """After a successful write to a collection (any route with a ``{collection}`` path
    parameter, except the read-only ones), cached answers about it are dropped."""
    if scope.get("method") not in _WRITE_METHODS:
        return
    collection = scope.get("path_params", {}).get("collection")
    tenant = scope.get("state", {}).get("tenant_id")
    app = scope.get("app")
    if not isinstance(collection, str) or not isinstance(tenant, str) or app is None:
        return
    if route_template(scope).endswith(_READ_ONLY_SUFFIXES):
        return
    state = getattr(app.state, "gateway", None)  # None before the lifespan ran
    if state is not None:
        await state.cache.invalidate_collection(tenant, collection)
