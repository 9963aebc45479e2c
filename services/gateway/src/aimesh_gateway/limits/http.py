"""Per-request limits as pure ASGI middleware: the request body's size, the time until
the response starts, and the client's presence while a generating route works.

Pure ASGI rather than ``BaseHTTPMiddleware`` so streamed responses (SSE) pass through
untouched and the body limit can count bytes as they arrive, with or without Content-Length.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aimesh_gateway.core.errors import PROBLEM_MEDIA_TYPE, path_problem_body

log = logging.getLogger("aimesh.gateway")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit; rendered as a 413 problem."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


MAX_BODY_EXTRA = "x-max-body-bytes"
"""``openapi_extra`` key a route sets to get its own body limit (e.g. uploads)."""


def route_body_limit(scope: Scope, default: int) -> int:
    """The matched route's own limit (``openapi_extra={"x-max-body-bytes": N}``) or
    ``default``."""
    extra = getattr(scope.get("route"), "openapi_extra", None)
    if isinstance(extra, dict):
        value = extra.get(MAX_BODY_EXTRA)
        if isinstance(value, int) and value > 0:
            return value
    return default


class BodyLimitMiddleware:
    """Rejects request bodies larger than the route's limit with 413.

    The limit is the route's own (``x-max-body-bytes`` in its ``openapi_extra``) or
    ``max_bytes``. The check runs where the body is read, which is after routing: a declared
    Content-Length over the limit fails before any byte is read, and a body without one
    (chunked) is counted as it streams in and fails as soon as it passes the limit, so no
    oversized body is ever buffered.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        declared_bytes = int(declared) if declared is not None and declared.isdigit() else None
        received = 0
        limit: int | None = None

        async def limited_receive() -> Message:
            nonlocal received, limit
            if limit is None:
                limit = route_body_limit(scope, self.max_bytes)
            if declared_bytes is not None and declared_bytes > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class TimeoutMiddleware:
    """Answers 504 when a request has produced no response within ``seconds``.

    Only the wait for the response's start is bounded: a stream (SSE) that has begun runs to
    its end (its backend call has its own deadline). The request runs in the server's own
    task under an ``asyncio.timeout`` that is lifted once the response starts (no extra task
    per request, which costs more than the rest of this middleware).
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        deadline = asyncio.timeout(self.seconds)

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                deadline.reschedule(None)  # a started response runs to its end
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, send_tracking)
        except TimeoutError:
            if started or not deadline.expired():
                raise  # not this middleware's timeout
        else:
            return
        log.warning("request timed out", extra={"timeout_seconds": self.seconds})
        request_id = scope.get("state", {}).get("request_id")
        body = path_problem_body(
            504,
            f"the request took longer than {self.seconds:g} s",
            path=scope.get("path"),
            request_id=request_id,
        )
        await JSONResponse(body, status_code=504, media_type=PROBLEM_MEDIA_TYPE)(
            scope, receive, send
        )


CANCEL_ON_DISCONNECT_EXTRA = "x-cancel-on-disconnect"
"""``openapi_extra`` key of the routes whose work stops when the client leaves (the ones that
generate: chat completions, ask, summarize, conversation messages)."""
CLIENT_CLOSED_REQUEST = 499
"""The status recorded for a request whose client left before its response ended (nginx's
and Envoy's convention); nothing is sent, the connection is gone."""


def _cancels_on_disconnect(scope: Scope) -> bool:
    extra = getattr(scope.get("route"), "openapi_extra", None)
    return isinstance(extra, dict) and extra.get(CANCEL_ON_DISCONNECT_EXTRA) is True


class CancelOnDisconnectMiddleware:
    """Stops a generating route's work as soon as its client disconnects.

    Once such a route has read its whole body, a watcher task waits on the server's
    ``receive`` for ``http.disconnect``. If the client leaves before the response has ended
    (before the first byte, while a non-streamed answer is computed, or mid-stream), the
    request's task is cancelled: the gRPC call it awaits is cancelled with it, which cancels
    the router's task and its upstream request. The request is then recorded as 499
    (``scope["state"]["client_closed"]``). Later ``receive`` calls of the app (Starlette's own
    disconnect listener) are answered from the watcher, so nothing else reads the socket.

    Routes opt in with ``openapi_extra={"x-cancel-on-disconnect": True}``: a write (a
    document upsert) is never cut off half-way by a client that left.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        watcher: asyncio.Task[None] | None = None
        gone = asyncio.Event()
        fired = False
        complete = False

        async def watch() -> None:
            nonlocal fired
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            if not complete:
                fired = True
                task.cancel()

        async def watched_receive() -> Message:
            nonlocal watcher
            if watcher is not None:
                await gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if (
                message["type"] == "http.request"
                and not message.get("more_body", False)
                and _cancels_on_disconnect(scope)
            ):
                watcher = asyncio.create_task(watch(), name="client-disconnect-watch")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        try:
            await self.app(scope, watched_receive, tracking_send)
        except asyncio.CancelledError:
            if not fired or task.uncancel() > 0:
                raise  # not (only) this middleware's cancellation: the server is stopping
        else:
            if fired and task.cancelling():
                task.uncancel()  # the app caught it (a stream noticed the disconnect itself)
        finally:
            if watcher is not None:
                watcher.cancel()
        if fired:
            scope.setdefault("state", {})["client_closed"] = True
