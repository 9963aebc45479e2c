"""A real HTTP server speaking the OpenAI chat completions protocol, for tests.

It stands in for a hosted LLM (the only test double the house rules allow). It listens
on a free port, records every request (JSON body and headers), and answers with
scripted replies: a completion (JSON, or SSE ``data: {...}`` chunks ending in
``data: [DONE]`` when the request asks to stream), tool calls (streamed as OpenAI does: the
call's id and name first, then its arguments in pieces), an HTTP error, a slow answer, a
malformed body (``raw``, with any ``raw_content_type``), a body cut off by a dropped
connection (``reset_mid_body``), a body that stops halfway and hangs (``stall_mid_body``),
or a stream that drops the connection after some chunks (``break_after``). ``always``
answers every request once the scripted replies are used up. :class:`ThreadedFakeOpenAI`
runs one on its own event loop in a thread, for synchronous tests (the fault suite).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Reply:
    """One scripted answer. ``status`` other than 200 answers an error with ``error``."""

    content: str = "ok"
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None
    status: int = 200
    error: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # Sent verbatim as a 200 body (``raw_content_type``) instead of a completion.
    raw: str | None = None
    raw_content_type: str = "application/json"
    # Announce a completion's full length, send half of it, then drop the connection.
    reset_mid_body: bool = False
    # Announce a completion's full length, send half of it, then hang this many seconds
    # (until the client gives up) before dropping the connection.
    stall_mid_body: float = 0.0
    # For streams: close the connection abruptly after this many content chunks.
    break_after: int | None = None
    # For streams: pause between content chunks (seconds).
    chunk_delay: float = 0.0
    # For streams: pieces of this many characters instead of words (splits anything, e.g. a
    # placeholder, across chunks).
    chunk_size: int | None = None
    # Tool calls of the reply: {"id", "name", "arguments"} each (finish_reason "tool_calls").
    tool_calls: list[dict[str, str]] | None = None


class Disconnect(Exception):
    """Raised inside a streamed body: uvicorn then drops the connection mid-response."""


@dataclass
class Recorded:
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body["messages"])


class FakeOpenAI:
    """Scripted OpenAI-compatible server; use ``async with`` or start()/stop()."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        # The answer to every request once ``replies`` is empty (None: a default completion).
        self.always: Reply | None = None
        self.requests: list[Recorded] = []
        # Requests whose client went away while the server was still delaying its reply,
        # and when each noticed it (time.monotonic()).
        self.disconnects = 0
        self.left_at: list[float] = []
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._app = Starlette(routes=self.routes())

    def routes(self) -> list[Route]:
        return [Route("/v1/chat/completions", self._chat, methods=["POST"])]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def reset(self) -> None:
        self.replies.clear()
        self.always = None
        self.requests.clear()
        self.disconnects = 0
        self.left_at.clear()

    async def start(self, log_level: str = "warning") -> None:
        config = uvicorn.Config(self._app, host="127.0.0.1", port=0, log_level=log_level)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:  # noqa: ASYNC110 - uvicorn has no startup event
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(Recorded(body=body, headers=dict(request.headers)))
        reply = self.replies.popleft() if self.replies else self.always or Reply()
        if reply.delay and await self._client_left_during(request, reply.delay):
            self.disconnects += 1
            self.left_at.append(time.monotonic())
            return Response(status_code=499)
        if reply.raw is not None:
            return Response(reply.raw, media_type=reply.raw_content_type)
        if reply.reset_mid_body or reply.stall_mid_body:
            return self._cut_off(body, reply)
        if reply.status != 200:
            error = reply.error or {"message": f"scripted error {reply.status}", "type": "error"}
            return JSONResponse({"error": error}, status_code=reply.status, headers=reply.headers)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._chunks(body, reply, include_usage), media_type="text/event-stream"
            )
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["content"] = reply.content or None
            message["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for call in reply.tool_calls
            ]
        payload: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        }
        if reply.usage is not None:
            payload["usage"] = reply.usage
        return JSONResponse(payload)

    @staticmethod
    def _cut_off(body: dict[str, Any], reply: Reply) -> Response:
        """A 200 whose body stops halfway: Content-Length promises the whole completion (or
        the whole event stream), then the connection drops."""
        message = {"role": "assistant", "content": reply.content}
        whole = json.dumps(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        ).encode()
        media_type = "application/json"
        if body.get("stream"):
            whole = b"data: " + whole + b"\n\n"
            media_type = "text/event-stream"

        async def half() -> AsyncIterator[bytes]:
            yield whole[: len(whole) // 2]
            await asyncio.sleep(reply.stall_mid_body)
            raise Disconnect

        return StreamingResponse(
            half(), media_type=media_type, headers={"content-length": str(len(whole))}
        )

    @staticmethod
    async def _client_left_during(request: Request, seconds: float) -> bool:
        """Wait ``seconds``; True as soon as the client disconnects."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                return True
            await asyncio.sleep(0.02)
        return False

    @staticmethod
    def _tool_call_pieces(index: int, call: dict[str, str]) -> list[dict[str, Any]]:
        """One call as OpenAI streams it: id, type and name first, then the arguments in
        pieces of at most 5 characters (only the index identifies the call after the first)."""
        arguments = call["arguments"]
        pieces: list[dict[str, Any]] = [
            {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": ""},
            }
        ]
        for start in range(0, len(arguments), 5):
            pieces.append({"index": index, "function": {"arguments": arguments[start : start + 5]}})
        return pieces

    async def _chunks(
        self, body: dict[str, Any], reply: Reply, include_usage: bool
    ) -> AsyncIterator[str]:
        def event(choices: list[dict[str, Any]], **extra: Any) -> str:
            chunk = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(chunk)}\n\n"

        finished = False
        try:
            yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
            words = reply.content.split(" ") if reply.content or not reply.tool_calls else []
            if reply.chunk_size is not None:
                size = reply.chunk_size
                words = [reply.content[i : i + size] for i in range(0, len(reply.content), size)]
            for index, call in enumerate(reply.tool_calls or ()):
                for call_piece in self._tool_call_pieces(index, call):
                    yield event([{"index": 0, "delta": {"tool_calls": [call_piece]}}])
            for index, word in enumerate(words):
                if reply.break_after is not None and index >= reply.break_after:
                    finished = True  # a scripted break, not a client disconnect
                    raise Disconnect
                last = index == len(words) - 1
                piece = word if last or reply.chunk_size is not None else word + " "
                yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
                await asyncio.sleep(reply.chunk_delay)
            yield event([{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}])
            if include_usage and reply.usage is not None:
                yield event([], usage=reply.usage)
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            if not finished:
                # The client went away mid-stream (the body was cancelled).
                self.disconnects += 1
                self.left_at.append(time.monotonic())


class ThreadedFakeOpenAI:
    """A :class:`FakeOpenAI` serving from its own event loop in a daemon thread, so that a
    synchronous test can script it (``server.always``, ``server.enqueue``) between requests."""

    def __init__(self) -> None:
        self.server = FakeOpenAI()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-openai", daemon=True
        )

    def start(self, timeout: float = 10) -> None:
        self._thread.start()
        # Quiet: each scripted dropped connection (Disconnect) would print a traceback
        # between the fault suite's own lines.
        start = self.server.start(log_level="critical")
        asyncio.run_coroutine_threadsafe(start, self._loop).result(timeout)

    def stop(self, timeout: float = 30) -> None:
        """Stop serving (hung replies end once their clients left) and end the thread."""
        self.server.reset()
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop.close()
