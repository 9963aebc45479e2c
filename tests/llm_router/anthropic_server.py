"""A real HTTP server speaking the Anthropic Messages API (JSON and SSE), for tests.

Scripted with the same :class:`Reply` objects as the OpenAI server: a message, an error
in Anthropic's error shape, a slow answer, a malformed body, or a stream that drops the
connection. Streams follow the documented event sequence: ``message_start``,
``content_block_start``, ``content_block_delta``..., ``content_block_stop``,
``message_delta`` (stop reason and output tokens), ``message_stop``.

Usage in a stream: ``message_start`` carries the input (and cache) tokens; ``message_delta``
carries cumulative counts, by default input and output. A reply's usage may say
``"delta_output_only": 1`` (the documented minimum: only ``output_tokens`` in
``message_delta``), and ``cache_read_input_tokens`` / ``cache_creation_input_tokens``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.llm_router.openai_server import Disconnect, FakeOpenAI, Recorded, Reply

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class FakeAnthropic(FakeOpenAI):
    """Scripted Anthropic Messages API server; ``base_url`` is the API root."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self) -> list[Route]:
        return [Route("/v1/messages", self._messages, methods=["POST"])]

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(Recorded(body=body, headers=dict(request.headers)))
        reply = self.replies.popleft() if self.replies else Reply()
        if reply.delay and await self._client_left_during(request, reply.delay):
            self.disconnects += 1
            return Response(status_code=499)
        if reply.raw is not None:
            return Response(reply.raw, media_type="application/json")
        if reply.status != 200:
            error = {
                "type": ERROR_TYPES.get(reply.status, "api_error"),
                "message": (reply.error or {}).get("message", f"scripted error {reply.status}"),
            }
            return JSONResponse(
                {"type": "error", "error": error}, status_code=reply.status, headers=reply.headers
            )
        usage = reply.usage or {}
        input_tokens = usage.get("prompt_tokens", 0)
        output_tokens = usage.get("completion_tokens", 0)
        stop_reason = STOP_REASONS.get(reply.finish_reason, "end_turn")
        if body.get("stream"):
            return StreamingResponse(
                self._events(body, reply, input_tokens, output_tokens, stop_reason),
                media_type="text/event-stream",
            )
        return JSONResponse(
            {
                "id": "msg_test",
                "type": "message",
                "role": "assistant",
                "model": body.get("model", ""),
                "content": [{"type": "text", "text": reply.content}],
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }
        )

    @staticmethod
    def _input_usage(reply: Reply, input_tokens: int) -> dict[str, int]:
        usage = reply.usage or {}
        counts = {"input_tokens": input_tokens}
        for key in ("cache_read_input_tokens", "cache_creation_input_tokens"):
            if key in usage:
                counts[key] = usage[key]
        return counts

    async def _events(
        self,
        body: dict[str, Any],
        reply: Reply,
        input_tokens: int,
        output_tokens: int,
        stop_reason: str,
    ) -> AsyncIterator[str]:
        def event(kind: str, data: dict[str, Any]) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        message = {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**self._input_usage(reply, input_tokens), "output_tokens": 1},
        }
        yield event("message_start", {"message": message})
        yield event(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        )
        words = reply.content.split(" ")
        for index, word in enumerate(words):
            if reply.break_after is not None and index >= reply.break_after:
                raise Disconnect
            piece = word if index == len(words) - 1 else word + " "
            yield event(
                "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}}
            )
            await asyncio.sleep(reply.chunk_delay)
        yield event("content_block_stop", {"index": 0})
        for offset, call in enumerate(reply.tool_calls or ()):
            # A tool_use block: id and name first, then the input JSON in pieces.
            block = offset + 1
            start = {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}
            yield event("content_block_start", {"index": block, "content_block": start})
            arguments = call["arguments"]
            for at in range(0, len(arguments), 5):
                json_piece = {"type": "input_json_delta", "partial_json": arguments[at : at + 5]}
                yield event("content_block_delta", {"index": block, "delta": json_piece})
            yield event("content_block_stop", {"index": block})
        yield event(
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                # Cumulative counts, as the API reports them in message_delta.
                "usage": (
                    {"output_tokens": output_tokens}
                    if (reply.usage or {}).get("delta_output_only")
                    else {**self._input_usage(reply, input_tokens), "output_tokens": output_tokens}
                ),
            },
        )
        yield event("message_stop", {})
