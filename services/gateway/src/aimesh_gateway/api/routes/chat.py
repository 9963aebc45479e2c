"""OpenAI-compatible chat completions over the router's streaming Generate.

Without ``stream`` the deltas are collected into one ``chat.completion``. With ``stream: true``
the reply is sent as OpenAI-style server-sent events (``chat.completion.chunk`` objects, then
``data: [DONE]``). The first message of the gRPC stream is awaited before the response starts,
so errors the router reports up front (unknown model, bad request, backend down) still become
proper problem+json responses; an error after streaming began is sent as an OpenAI-style
``{"error": ...}`` event, which OpenAI clients raise as an exception.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from fastapi import APIRouter, HTTPException
from fastapi.responses import Response, StreamingResponse

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.api.call_usage import CallUsage
from aimesh_gateway.api.deps import (
    API_PREFIX,
    CacheDep,
    SettingsDep,
    UpstreamDep,
    UsageDep,
    UserPrincipal,
)
from aimesh_gateway.api.rag_model import is_rag_model, rag_completion
from aimesh_gateway.api.task_stream import first_message, next_message
from aimesh_gateway.api.tokenids import count_tokens
from aimesh_gateway.core.errors import (
    GENERIC_INTERNAL,
    backend_error_fields,
    openai_error,
    rpc_error_to_http,
)
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.limits.http import CANCEL_ON_DISCONNECT_EXTRA
from aimesh_gateway.schemas.chat import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessageIn,
    ChatMessageOut,
    ChatUsage,
    FunctionCall,
    NamedToolChoice,
    ToolCall,
)
from aimesh_gateway.schemas.problem import COMMON_ERRORS, NOT_FOUND

log = logging.getLogger("aimesh.gateway.chat")

router = APIRouter(prefix=API_PREFIX, tags=["openai"], route_class=CheckedJSONRoute)

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _chat_message(message: ChatMessageIn) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(
        role=message.proto_role(),
        content=message.text(),
        tool_calls=[
            llm_pb2.ToolCall(
                id=call.id, name=call.function.name, arguments_json=call.function.arguments
            )
            for call in message.tool_calls or ()
        ],
        tool_call_id=message.tool_call_id or "",
    )


def _generate_request(body: ChatCompletionRequest, tenant_id: str) -> llm_pb2.GenerateRequest:
    request = llm_pb2.GenerateRequest(
        model=body.model or "",
        messages=[_chat_message(message) for message in body.messages],
        max_tokens=body.token_limit(),
        tenant_id=tenant_id,
        stop=body.stop_sequences(),
        tools=[
            llm_pb2.Tool(
                name=tool.function.name,
                description=tool.function.description or "",
                parameters_json=json.dumps(tool.function.parameters)
                if tool.function.parameters is not None
                else "",
            )
            for tool in body.tools or ()
        ],
    )
    if isinstance(body.tool_choice, NamedToolChoice):
        request.tool_choice_name = body.tool_choice.function.name
    elif body.tool_choice is not None:
        request.tool_choice = body.tool_choice
    if body.parallel_tool_calls is not None:
        request.parallel_tool_calls = body.parallel_tool_calls
    if body.temperature is not None:
        request.temperature = body.temperature
    return request


def _tool_calls(calls: list[llm_pb2.ToolCall]) -> list[ToolCall]:
    return [
        ToolCall(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments_json))
        for call in calls
    ]


def _chat_usage(usage: llm_pb2.Usage | None) -> ChatUsage:
    if usage is None:
        return ChatUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
    return ChatUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


@router.post(
    "/chat/completions",
    openapi_extra={CANCEL_ON_DISCONNECT_EXTRA: True},
    responses={
        **COMMON_ERRORS,
        **NOT_FOUND,
        200: {
            "description": "A chat.completion, or with `stream: true` a text/event-stream of "
            "chat.completion.chunk objects ending with `data: [DONE]`.",
            "content": {"text/event-stream": {}},
        },
    },
    response_model=ChatCompletion,
    summary="Chat completion (OpenAI-compatible)",
)
async def chat_completions(
    body: ChatCompletionRequest,
    principal: UserPrincipal,
    upstream: UpstreamDep,
    usage_meter: UsageDep,
    cache: CacheDep,
    settings: SettingsDep,
) -> ChatCompletion | StreamingResponse | Response:
    if (refused := body.refused()) is not None:
        raise HTTPException(400, refused)
    if body.model is not None and is_rag_model(body.model):
        if body.uses_tools():
            raise HTTPException(400, f"model {body.model!r} does not support tools")
        return await rag_completion(
            body, principal, upstream, usage_meter, settings.rag_sources_in_content
        )
    if body.rag is not None:
        raise HTTPException(400, 'rag options need a "rag:<collection>" model')
    # Only temperature-0, non-streamed completions are deterministic enough to cache.
    cacheable = body.temperature == 0 and not body.stream
    key = None
    if cacheable:
        ignored = set(body.model_extra or ())
        payload = body.model_dump(
            mode="json", exclude={"user", "stream", "stream_options", *ignored}
        )
        key, cached = await cache.lookup(body.model or "", payload)
        if cached is not None:
            return cached
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    request = _generate_request(body, principal.tenant_id)
    # Counted only for a tenant with budgets: the reservation is all it serves.
    prompt_tokens = prompt_token_count(request) if await usage_meter.budgeted() else 0
    await usage_meter.reserve(body.model or "", "chat", prompt_tokens, body.token_limit())
    stream = upstream.llm_router.Generate(
        request, timeout=upstream.timeout, metadata=upstream.metadata
    )
    meter = CallUsage(usage_meter, body.model or "")
    if body.stream:
        messages = stream.__aiter__()
        first = await first_message(stream, messages, meter)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = _ChunkWriter(completion_id, created, body.model or "")
        return StreamingResponse(
            chunks.events(stream, messages, first, include_usage, meter),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )

    parts: list[str] = []
    model = body.model or ""
    finish_reason = "stop"
    usage: llm_pb2.Usage | None = None
    answered_by = ("", "")  # provider and prompt version, as the router reports them
    calls: list[llm_pb2.ToolCall] = []
    try:
        async for message in stream:
            meter.see(message)
            parts.append(message.delta)
            model = message.model or model
            meter.model = model
            answered_by = (message.provider, message.prompt_version)
            finish_reason = message.finish_reason or finish_reason
            if message.HasField("usage"):
                usage = message.usage
            calls.extend(message.tool_calls)
    except BaseException as error:
        stream.cancel()
        meter.ended_early(cancelled=not isinstance(error, Exception))
        raise
    if usage is not None:
        await meter.completed(model, usage, answered_by[0], answered_by[1])
    meter.finish()  # a no-op once charged; without a final usage, releases the reservation
    completion = ChatCompletion(
        id=completion_id,
        created=created,
        model=model,
        choices=[
            ChatChoice(
                message=ChatMessageOut(
                    content="".join(parts) or (None if calls else ""),
                    tool_calls=_tool_calls(calls) or None,
                ),
                finish_reason=finish_reason,
            )
        ],
        usage=_chat_usage(usage),
    )
    if cacheable:
        await cache.store(key, completion)
    return completion


class _ChunkWriter:
    """Formats the SSE events of one streamed completion."""

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self.completion_id = completion_id
        self.created = created
        self.model = model

    def _event(self, payload: dict[str, Any]) -> str:
        return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        return self._event(
            {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
        )

    def usage_chunk(self, usage: llm_pb2.Usage | None) -> str:
        return self._event(
            {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": _chat_usage(usage).model_dump(),
            }
        )

    def error(self, status: int, message: str) -> str:
        """OpenAI's error object as the stream's last event (the status is sent already)."""
        return self._event({"error": openai_error(status, message)})

    async def events(
        self,
        stream: grpc.aio.UnaryStreamCall[llm_pb2.GenerateRequest, llm_pb2.GenerateResponse],
        messages: AsyncIterator[llm_pb2.GenerateResponse],
        first: llm_pb2.GenerateResponse | None,
        include_usage: bool,
        meter: CallUsage,
    ) -> AsyncIterator[str]:
        finish_reason = "stop"
        usage: llm_pb2.Usage | None = None
        answered_by = ("", "")
        message = first
        try:
            if message is not None and message.model:
                self.model = meter.model = message.model
            yield self.chunk({"role": "assistant", "content": ""})
            while message is not None:
                if message.delta:
                    yield self.chunk({"content": message.delta})
                if message.tool_calls:
                    yield self.chunk({"tool_calls": _tool_call_deltas(message.tool_calls)})
                finish_reason = message.finish_reason or finish_reason
                answered_by = (message.provider, message.prompt_version)
                if message.HasField("usage"):
                    usage = message.usage
                message = await next_message(messages, meter)
            yield self.chunk({}, finish_reason)
            if usage is not None:
                await meter.completed(self.model, usage, answered_by[0], answered_by[1])
            if include_usage:
                yield self.usage_chunk(usage)
            yield "data: [DONE]\n\n"
        except grpc.aio.AioRpcError as error:
            meter.ended_early(cancelled=False)
            status, detail = rpc_error_to_http(error)
            log.warning(
                "generation stream failed",
                extra=backend_error_fields(error.code(), error.details(), status),
            )
            yield self.error(status, detail)
        except Exception:
            meter.ended_early(cancelled=False)
            log.exception("generation stream failed")
            yield self.error(500, GENERIC_INTERNAL)
        except BaseException:
            meter.ended_early(cancelled=True)  # the client left
            raise
        finally:
            stream.cancel()
            meter.finish()  # a no-op once charged


def prompt_token_count(request: llm_pb2.GenerateRequest) -> int:
    """The prompt's tokens as a budget reservation counts them: every message and tool."""
    texts = [message.content for message in request.messages]
    texts += [call.arguments_json for message in request.messages for call in message.tool_calls]
    texts += [f"{tool.name} {tool.description} {tool.parameters_json}" for tool in request.tools]
    texts.append(request.response_format_json)  # a JSON schema the provider is given
    return count_tokens(*texts)


def _tool_call_deltas(calls: Iterable[llm_pb2.ToolCall]) -> list[dict[str, Any]]:
    """Whole tool calls in the ``delta.tool_calls`` shape of OpenAI chunks (one piece each)."""
    return [
        {"index": index, **call.model_dump()} for index, call in enumerate(_tool_calls(list(calls)))
    ]
