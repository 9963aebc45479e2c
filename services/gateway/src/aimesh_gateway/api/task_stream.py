"""Typed server-sent events for streamed tasks (/v1/ask, /v1/summarize, conversations).

The router streams ``StreamEvent`` messages; each becomes one SSE event whose name says
what it carries::

    event: sources    data: {"sources": [Citation, ...]}    (answers, grounded chats)
    event: delta      data: {"text": "..."}
    event: replace    data: {"text": "..."}   (the whole reply, replacing the deltas: the
                                              model's citations did not validate)
    event: citations  data: {"citations": [Citation, ...]}  (only sources actually given)
    event: usage      data: {"prompt_tokens": ..., "completion_tokens": ..., ...}
    event: done       data: {"model": "default", "finish_reason": "stop", "provider": "local",
                             "prompt_version": "qa/v1", "fallback_reason": "",
                             "replaced_model": "", "request_id": "..."}
    event: error      data: {"status": 503, "detail": "..."}

The first event is awaited before the response starts, so errors reported up front
(validation, unknown model or conversation, backend down) are ordinary problem+json
responses. A later failure is sent as an ``error`` event. When the client disconnects
(before the first event or later), ``CancelOnDisconnectMiddleware`` cancels the request's
task and with it the gRPC call, which cancels the upstream model call in the router.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, TypeVar

import grpc
from fastapi import Request
from fastapi.responses import StreamingResponse
from google.protobuf import json_format

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.core.errors import (
    GENERIC_INTERNAL,
    backend_error_fields,
    grpc_status_to_http,
    request_id_of,
)
from aimesh_gateway.schemas.ask import Citation

log = logging.getLogger("aimesh.gateway.task_stream")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
STREAM_DESCRIPTION = (
    "With `stream: true`, a text/event-stream of typed events: `sources`, `delta`..., "
    "`citations`, `usage`, `done` (or `error`)."
)

EventCall = grpc.aio.UnaryStreamCall[Any, llm_pb2.StreamEvent]
T = TypeVar("T")


class UsageRecorder(Protocol):
    """Records the tokens of the finished task and what answered it."""

    async def __call__(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        provider: str = "",
        prompt_version: str = "",
        cost_usd: float = 0.0,
    ) -> None: ...


class SpentSettler(Protocol):
    """Settles what a stream cut short spent (the budget reservation of its call), in the
    background: it is called from a ``finally`` that a cancellation may be running."""

    def __call__(
        self, model: str, prompt: int | Sequence[str], completion: int | Sequence[str]
    ) -> None: ...


def _sse(name: str, payload: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


def format_event(event: llm_pb2.StreamEvent, request_id: str = "") -> str:
    kind = event.WhichOneof("event")
    if kind == "delta":
        return _sse("delta", {"text": event.delta})
    if kind == "replace":
        return _sse("replace", {"text": event.replace})
    if kind in ("sources", "citations"):
        items = (event.sources if kind == "sources" else event.citations).items
        return _sse(kind, {kind: [Citation.from_proto(item).model_dump() for item in items]})
    if kind == "usage":
        usage = json_format.MessageToDict(
            event.usage, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return _sse("usage", usage)
    if kind == "done":
        done = event.done
        return _sse(
            "done",
            {
                "model": done.model,
                "finish_reason": done.finish_reason,
                "provider": done.provider,
                "prompt_version": done.prompt_version,
                "fallback_reason": done.fallback_reason,
                "replaced_model": done.replaced_model,
                "request_id": request_id,
            },
        )
    raise ValueError(f"unknown stream event {kind!r}")


async def first_message(call: grpc.aio.Call, messages: AsyncIterator[T]) -> T | None:
    """The first message of a streamed call (None when it ends at once), awaited before a
    response starts so that an error reported up front is an ordinary problem response.
    The call is cancelled when the wait fails or is cancelled (the client left)."""
    try:
        return await anext(messages, None)
    except BaseException:
        call.cancel()
        raise


async def event_stream(
    call: EventCall,
    record_usage: UsageRecorder | None = None,
    request: Request | None = None,
    settle_spent: SpentSettler | None = None,
    prompt_text: str = "",
) -> StreamingResponse:
    """The SSE response relaying ``call``; raises its error if it fails before any event.
    ``request`` gives the response's request id."""
    events = call.__aiter__()
    first = await first_message(call, events)
    request_id = (request_id_of(request) if request is not None else None) or ""
    return StreamingResponse(
        _relay(call, events, first, record_usage, request_id, settle_spent, prompt_text),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def _relay(
    call: EventCall,
    events: AsyncIterator[llm_pb2.StreamEvent],
    first: llm_pb2.StreamEvent | None,
    record_usage: UsageRecorder | None,
    request_id: str,
    settle_spent: SpentSettler | None = None,
    prompt_text: str = "",
) -> AsyncIterator[str]:
    event = first
    usage: llm_pb2.Usage | None = None
    # What a stream cut short spent: the prompt, the sources given to the model, the deltas.
    given: list[str] = [prompt_text]
    written: list[str] = []
    try:
        while event is not None:
            if event.HasField("sources"):
                given.extend(item.text for item in event.sources.items)
            if event.delta:
                written.append(event.delta)
            if event.HasField("usage"):
                usage = event.usage
            if event.HasField("done") and usage is not None and record_usage is not None:
                await record_usage(
                    event.done.model,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    provider=event.done.provider,
                    prompt_version=event.done.prompt_version,
                    cost_usd=usage.cost_usd,
                )
            yield format_event(event, request_id)
            event = await anext(events, None)
    except grpc.aio.AioRpcError as error:
        status, detail = grpc_status_to_http(error.code(), error.details())
        log.warning(
            "task stream failed",
            extra=backend_error_fields(error.code(), error.details(), status),
        )
        yield _sse("error", {"status": status, "detail": detail})
    except Exception:
        log.exception("task stream failed")
        yield _sse("error", {"status": 500, "detail": GENERIC_INTERNAL})
    finally:
        call.cancel()
        if settle_spent is not None:  # a no-op once the usage was recorded
            settle_spent("", given, written)
