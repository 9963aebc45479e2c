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

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from fastapi import Request
from fastapi.responses import StreamingResponse
from google.protobuf import json_format

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.api.call_usage import CallUsage, RouterMessage, progress_only
from aimesh_gateway.core.errors import (
    GENERIC_INTERNAL,
    backend_error_fields,
    request_id_of,
    rpc_error_to_http,
)
from aimesh_gateway.schemas.ask import Citation

if TYPE_CHECKING:
    from aimesh_gateway.api.deps import UsageContext

log = logging.getLogger("aimesh.gateway.task_stream")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
STREAM_DESCRIPTION = (
    "With `stream: true`, a text/event-stream of typed events: `sources`, `delta`..., "
    "`citations`, `usage`, `done` (or `error`)."
)

EventCall = grpc.aio.UnaryStreamCall[Any, llm_pb2.StreamEvent]
M = TypeVar("M", bound=RouterMessage)


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


async def first_message(
    call: grpc.aio.Call, messages: AsyncIterator[M], usage: CallUsage | None = None
) -> M | None:
    """The first message of a streamed call that carries more than ``spent`` (None when it
    ends at once), awaited before a response starts so that an error reported up front is
    an ordinary problem response. ``usage`` sees every message. The call is cancelled when
    the wait fails or is cancelled (the client left: then what it spent is charged)."""
    try:
        return await next_message(messages, usage)
    except BaseException as error:
        call.cancel()
        if usage is not None:
            usage.ended_early(cancelled=isinstance(error, asyncio.CancelledError))
        raise


async def next_message(messages: AsyncIterator[M], usage: CallUsage | None = None) -> M | None:
    """The next message with more than ``spent`` (None at the end); ``usage`` sees all."""
    while True:
        message = await anext(messages, None)
        if message is None:
            return None
        if usage is not None:
            usage.see(message)
        if not progress_only(message):
            return message


async def gather_answer(
    call: grpc.aio.UnaryStreamCall[llm_pb2.AnswerRequest, llm_pb2.StreamEvent],
    usage: UsageContext | None,
    model: str = "",
    *,
    charged_as_asked: bool = False,
) -> llm_pb2.AnswerResponse:
    """The whole answer of a ``StreamAnswer`` call, for a client that did not ask for a
    stream. The router is called streamed all the same (as chat completions call
    ``Generate``), so a client that leaves is charged what the model had spent until
    then, as a streamed one is; the unary ``Answer`` tells nothing before it ends.

    Usage is charged under the alias that answered, or with ``charged_as_asked`` under
    ``model`` (a ``rag:`` model is charged as itself)."""
    gathered = await _gather(call, usage, model, charged_as_asked)
    return llm_pb2.AnswerResponse(
        answer=gathered.text,
        citations=gathered.citations,
        model=gathered.done.model,
        usage=gathered.usage,
        provider=gathered.done.provider,
        prompt_version=gathered.done.prompt_version,
        fallback_reason=gathered.done.fallback_reason,
        replaced_model=gathered.done.replaced_model,
    )


async def gather_summary(
    call: grpc.aio.UnaryStreamCall[llm_pb2.SummarizeRequest, llm_pb2.StreamEvent],
    usage: UsageContext | None,
    model: str = "",
) -> llm_pb2.SummarizeResponse:
    """The whole summary of a ``StreamSummarize`` call (see :func:`gather_answer`)."""
    gathered = await _gather(call, usage, model, charged_as_asked=False)
    return llm_pb2.SummarizeResponse(
        summary=gathered.text,
        model=gathered.done.model,
        usage=gathered.usage,
        provider=gathered.done.provider,
        prompt_version=gathered.done.prompt_version,
    )


@dataclass
class _Gathered:
    text: str
    citations: list[llm_pb2.Citation]
    usage: llm_pb2.Usage
    done: llm_pb2.StreamDone


async def _gather(
    call: EventCall, usage: UsageContext | None, model: str, charged_as_asked: bool
) -> _Gathered:
    """Every event of ``call`` folded into the whole reply, charged once (:class:`CallUsage`)."""
    meter = CallUsage(usage, model)
    deltas: list[str] = []
    replaced: str | None = None
    citations: list[llm_pb2.Citation] = []
    final: llm_pb2.Usage | None = None
    done = llm_pb2.StreamDone()
    try:
        async for event in call:
            meter.see(event)
            kind = event.WhichOneof("event")
            if kind == "delta":
                deltas.append(event.delta)
            elif kind == "replace":
                replaced = event.replace
            elif kind == "citations":
                citations = list(event.citations.items)
            elif kind == "usage":
                final = event.usage
            elif kind == "done":
                done = event.done
    except BaseException as error:
        call.cancel()
        # The client left (cancelled), or the call failed: charged what was spent.
        meter.ended_early(cancelled=not isinstance(error, Exception))
        raise
    if final is not None:
        if not charged_as_asked:
            meter.model = done.model or meter.model
        await meter.completed(meter.model, final, done.provider, done.prompt_version)
    meter.finish()  # a no-op once charged; without a final usage, releases the reservation
    text = replaced if replaced is not None else "".join(deltas).strip()
    return _Gathered(text, citations, final or llm_pb2.Usage(), done)


async def event_stream(
    call: EventCall,
    usage: UsageContext | None = None,
    request: Request | None = None,
    model: str = "",
) -> StreamingResponse:
    """The SSE response relaying ``call``; raises its error if it fails before any event.
    ``usage`` is charged the call's tokens (under ``model``, the alias asked for, until the
    stream names the one that answered); ``request`` gives the response's request id."""
    events = call.__aiter__()
    meter = CallUsage(usage, model)
    first = await first_message(call, events, meter)
    request_id = (request_id_of(request) if request is not None else None) or ""
    return StreamingResponse(
        _relay(call, events, first, meter, request_id),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def _relay(
    call: EventCall,
    events: AsyncIterator[llm_pb2.StreamEvent],
    first: llm_pb2.StreamEvent | None,
    meter: CallUsage,
    request_id: str,
) -> AsyncIterator[str]:
    event = first
    usage: llm_pb2.Usage | None = None
    try:
        while event is not None:
            if event.HasField("usage"):
                usage = event.usage
            if event.HasField("done"):
                meter.model = event.done.model
                if usage is not None:
                    await meter.completed(
                        event.done.model,
                        usage,
                        provider=event.done.provider,
                        prompt_version=event.done.prompt_version,
                    )
            yield format_event(event, request_id)
            event = await next_message(events, meter)
    except grpc.aio.AioRpcError as error:
        meter.ended_early(cancelled=False)
        status, detail = rpc_error_to_http(error)
        log.warning(
            "task stream failed",
            extra=backend_error_fields(error.code(), error.details(), status),
        )
        yield _sse("error", {"status": status, "detail": detail})
    except Exception:
        meter.ended_early(cancelled=False)
        log.exception("task stream failed")
        yield _sse("error", {"status": 500, "detail": GENERIC_INTERNAL})
    except BaseException:
        meter.ended_early(cancelled=True)  # the client left (cancelled, or the body closed)
        raise
    finally:
        call.cancel()
        meter.finish()  # a no-op once charged
