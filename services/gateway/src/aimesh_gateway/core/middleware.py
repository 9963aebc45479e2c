"""Pure ASGI middleware: request context (id, access log, metrics, last-resort 500) and the
request body limit.

Pure ASGI rather than ``BaseHTTPMiddleware`` so streamed responses (SSE) pass through
untouched and the body limit can count bytes as they arrive, with or without Content-Length.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aimesh_gateway.core.errors import GENERIC_INTERNAL, PROBLEM_MEDIA_TYPE, problem_body
from aimesh_gateway.core.metrics import UNMATCHED_ROUTE, HttpMetrics

access_log = logging.getLogger("aimesh.gateway.access")
log = logging.getLogger("aimesh.gateway")

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming request id is propagated only when it is short and plain (it ends up in logs
# and gRPC metadata); anything else is replaced by a fresh one.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# Probes are logged at DEBUG so they do not drown the access log.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

request_id_var: ContextVar[str | None] = ContextVar("aimesh_request_id", default=None)


class RequestIdLogFilter(logging.Filter):
    """Adds the current request id to every log record made while handling a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = request_id_var.get()
            if request_id is not None:
                record.request_id = request_id
        return True


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
    if incoming and _SANE_REQUEST_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex


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
        request_id = choose_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        start = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if started:
                raise
            await self._internal_error(scope, request_id)(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, status, time.perf_counter() - start, request_id)
            request_id_var.reset(token)

    @staticmethod
    def _internal_error(scope: Scope, request_id: str) -> JSONResponse:
        body = problem_body(
            500, GENERIC_INTERNAL, instance=scope.get("path"), request_id=request_id
        )
        return JSONResponse(body, status_code=500, media_type=PROBLEM_MEDIA_TYPE)

    def _record(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        method = str(scope.get("method", ""))
        route = route_template(scope)
        self.metrics.observe(method, route, status, seconds)
        path = scope.get("path", "")
        access_log.log(
            logging.DEBUG if path in _QUIET_PATHS and status < 500 else logging.INFO,
            "%s %s %d",
            method,
            route,
            status,
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "tenant": scope.get("state", {}).get("tenant_id"),
                "request_id": request_id,
            },
        )


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit; rendered as a 413 problem."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Rejects request bodies larger than ``max_bytes`` with 413.

    The check runs where the body is read: a declared Content-Length over the limit fails
    before any byte is read, and a body without one (chunked) is counted as it streams in and
    fails as soon as it passes the limit, so no oversized body is ever buffered.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        too_large_declared = (
            declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        )
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if too_large_declared:
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)
