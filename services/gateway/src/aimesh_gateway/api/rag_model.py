"""``model: "rag:<collection>"`` on the chat completions route: any OpenAI client gets RAG.

The last user message is the question; the router answers it from the collection
(``LLMRouterService.Answer``) and the reply's content is the answer followed by its numbered
sources, so a client that only reads ``message.content`` still sees the citations.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import HTTPException
from fastapi.responses import StreamingResponse

from aimesh.llm.v1 import llm_pb2
from aimesh_common.limits import valid_collection_name
from aimesh_gateway.api.deps import Upstream, UsageContext
from aimesh_gateway.auth.security import Principal
from aimesh_gateway.schemas.chat import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessageOut,
    ChatUsage,
)

RAG_PREFIX = "rag:"
_SNIPPET_CHARS = 160


def is_rag_model(model: str) -> bool:
    return model.startswith(RAG_PREFIX)


def _collection(model: str) -> str:
    collection = model[len(RAG_PREFIX) :]
    if not valid_collection_name(collection):
        raise HTTPException(422, f"model {model!r}: rag:<collection> needs a valid collection name")
    return collection


def _content(reply: llm_pb2.AnswerResponse) -> str:
    if not reply.citations:
        return reply.answer
    lines = [reply.answer, "", "Sources:"]
    for citation in reply.citations:
        snippet = " ".join(citation.text.split())
        if len(snippet) > _SNIPPET_CHARS:
            snippet = snippet[: _SNIPPET_CHARS - 1] + "…"
        lines.append(f"[{citation.source}] {citation.document_id}: {snippet}")
    return "\n".join(lines)


async def rag_completion(
    body: ChatCompletionRequest,
    principal: Principal,
    upstream: Upstream,
    usage_meter: UsageContext,
) -> ChatCompletion | StreamingResponse:
    model = body.model or ""
    collection = _collection(model)
    # No user text leaves the question empty: the router, which owns that rule, answers 400.
    question = next(
        (m.text() for m in reversed(body.messages) if m.role == "user" and m.text().strip()), ""
    )
    reply = await upstream.llm_router.Answer(
        llm_pb2.AnswerRequest(
            question=question, collection=collection, tenant_id=principal.tenant_id
        ),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    usage = ChatUsage(
        prompt_tokens=reply.usage.prompt_tokens,
        completion_tokens=reply.usage.completion_tokens,
        total_tokens=reply.usage.total_tokens,
    )
    await usage_meter.record(
        model,
        usage.prompt_tokens,
        usage.completion_tokens,
        provider=reply.provider,
        prompt_version=reply.prompt_version,
    )
    completion = ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=model,
        choices=[ChatChoice(message=ChatMessageOut(content=_content(reply)), finish_reason="stop")],
        usage=usage,
    )
    if not body.stream:
        return completion
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    return StreamingResponse(
        _events(completion, include_usage),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(completion: ChatCompletion, include_usage: bool) -> AsyncIterator[str]:
    """The answer as OpenAI chunks: role, the content, the finish, optional usage, [DONE]."""

    def event(delta: dict[str, str], finish: str | None = None) -> str:
        payload = {
            "id": completion.id,
            "object": "chat.completion.chunk",
            "created": completion.created,
            "model": completion.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"

    yield event({"role": "assistant", "content": ""})
    yield event({"content": completion.choices[0].message.content or ""})
    yield event({}, "stop")
    if include_usage:
        payload = {
            "id": completion.id,
            "object": "chat.completion.chunk",
            "created": completion.created,
            "model": completion.model,
            "choices": [],
            "usage": completion.usage.model_dump(),
        }
        yield f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
    yield "data: [DONE]\n\n"
