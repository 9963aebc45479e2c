"""``model: "rag:<collection>"`` on the chat completions route: any OpenAI client gets RAG.

The last user message is the question; the router answers it from the collection
(``LLMRouterService.Answer``, or ``StreamAnswer`` when streamed: the answer's tokens are
relayed as they are generated). The citations come in structure, in the shape OpenAI
clients read: ``message.annotations`` (in a streamed reply, on the last content chunk),
one ``url_citation`` per cited span with the span's start and end index in ``content`` and
the source's document id, chunk id, title and text. By default the content also ends with
the numbered sources as text, for clients that only show ``content``
(``AIMESH_RAG_SOURCES_IN_CONTENT``, or ``rag.sources_in_content`` per request).

``extra_body={"rag": {"model": ..., "top_k": ..., "filter": ..., "rerank": ...}}`` chooses
the answering alias and the retrieval settings.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from fastapi import HTTPException
from fastapi.responses import StreamingResponse

from aimesh.llm.v1 import llm_pb2
from aimesh_common.limits import valid_collection_name
from aimesh_common.structs import to_struct
from aimesh_gateway.api.call_usage import CallUsage
from aimesh_gateway.api.deps import Upstream, UsageContext
from aimesh_gateway.api.task_stream import first_message, gather_answer, next_message
from aimesh_gateway.auth.security import Principal
from aimesh_gateway.core.errors import (
    GENERIC_INTERNAL,
    backend_error_fields,
    openai_error,
    rpc_error_to_http,
)
from aimesh_gateway.limits.budgets import FILL_CONTEXT
from aimesh_gateway.schemas.chat import (
    Annotation,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessageOut,
    ChatUsage,
    SourceCitation,
)

log = logging.getLogger("aimesh.gateway.rag")

RAG_PREFIX = "rag:"
_SNIPPET_CHARS = 160
_MARKER = re.compile(r"\[(\d+)\]")
# Where a cited span starts: after the end of the previous sentence or line, or of the
# previous marker.
_SPAN_START = re.compile(r"(?:[.!?]\s+|\n|\]\s*)")


def is_rag_model(model: str) -> bool:
    return model.startswith(RAG_PREFIX)


def _collection(model: str) -> str:
    collection = model[len(RAG_PREFIX) :]
    if not valid_collection_name(collection):
        raise HTTPException(422, f"model {model!r}: rag:<collection> needs a valid collection name")
    return collection


def sources_block(citations: Sequence[llm_pb2.Citation]) -> str:
    """The numbered sources as text, appended to the answer ("" without citations)."""
    if not citations:
        return ""
    lines = ["", "", "Sources:"]
    for citation in citations:
        snippet = " ".join(citation.text.split())
        if len(snippet) > _SNIPPET_CHARS:
            snippet = snippet[: _SNIPPET_CHARS - 1] + "…"
        lines.append(f"[{citation.source}] {citation.document_id}: {snippet}")
    return "\n".join(lines)


def source_title(citation: llm_pb2.Citation) -> str:
    title = citation.metadata.fields.get("title") if citation.HasField("metadata") else None
    if title is not None and title.HasField("string_value") and title.string_value.strip():
        return title.string_value
    return citation.document_id


def cited_spans(
    answer: str, citations: Sequence[llm_pb2.Citation], collection: str
) -> list[Annotation]:
    """One ``url_citation`` per ``[n]`` marker in ``answer`` naming a given source: the
    span runs from the start of the sentence the marker closes (after the previous
    sentence's end, line break or marker) to the end of the marker."""
    by_number = {citation.source: citation for citation in citations}
    found: list[Annotation] = []
    for marker in _MARKER.finditer(answer):
        citation = by_number.get(int(marker.group(1)))
        if citation is None:
            continue
        # The last boundary that leaves some text before the marker ("It rains. [1]" cites
        # "It rains.", not just the marker).
        start = 0
        for boundary in _SPAN_START.finditer(answer, 0, marker.start()):
            if answer[boundary.end() : marker.start()].strip():
                start = boundary.end()
        found.append(
            Annotation(
                url_citation=SourceCitation(
                    start_index=start,
                    end_index=marker.end(),
                    url=f"aimesh://{collection}/{citation.document_id}#{citation.chunk_id}",
                    title=source_title(citation),
                    source=citation.source,
                    document_id=citation.document_id,
                    chunk_id=citation.chunk_id,
                    text=citation.text,
                )
            )
        )
    return found


def _answer_request(
    body: ChatCompletionRequest, principal: Principal, collection: str
) -> llm_pb2.AnswerRequest:
    # No user text leaves the question empty: the router, which owns that rule, answers 400.
    question = next(
        (m.text() for m in reversed(body.messages) if m.role == "user" and m.text().strip()), ""
    )
    options = body.rag
    if options is None:
        return llm_pb2.AnswerRequest(
            question=question, collection=collection, tenant_id=principal.tenant_id
        )
    request = llm_pb2.AnswerRequest(
        question=question,
        collection=collection,
        tenant_id=principal.tenant_id,
        model=options.model or "",
        top_k=options.top_k or 0,
        filter=to_struct(options.filter),
    )
    if options.rerank is not None:
        request.rerank = options.rerank
    return request


async def rag_completion(
    body: ChatCompletionRequest,
    principal: Principal,
    upstream: Upstream,
    usage_meter: UsageContext,
    sources_in_content: bool,
) -> ChatCompletion | StreamingResponse:
    model = body.model or ""
    collection = _collection(model)
    if body.rag is not None and body.rag.sources_in_content is not None:
        sources_in_content = body.rag.sources_in_content
    request = _answer_request(body, principal, collection)
    # The router packs sources into the alias's context window: the prompt may fill it.
    await usage_meter.reserve(request.model, "qa", FILL_CONTEXT, 0)
    if body.stream:
        call = upstream.llm_router.StreamAnswer(
            request, timeout=upstream.timeout, metadata=upstream.metadata
        )
        events = call.__aiter__()
        meter = CallUsage(usage_meter, model)
        # Errors reported up front (unknown collection, bad filter) stay problem+json.
        first = await first_message(call, events, meter)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        writer = _RagStream(model, collection, sources_in_content)
        return StreamingResponse(
            writer.events(call, events, first, include_usage, meter),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    reply = await gather_answer(
        upstream.llm_router.StreamAnswer(
            request, timeout=upstream.timeout, metadata=upstream.metadata
        ),
        usage_meter,
        model,
        charged_as_asked=True,
    )
    usage = ChatUsage(
        prompt_tokens=reply.usage.prompt_tokens,
        completion_tokens=reply.usage.completion_tokens,
        total_tokens=reply.usage.total_tokens,
    )
    content = reply.answer + (sources_block(reply.citations) if sources_in_content else "")
    return ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=model,
        choices=[
            ChatChoice(
                message=ChatMessageOut(
                    content=content,
                    annotations=cited_spans(reply.answer, reply.citations, collection),
                ),
                finish_reason="stop",
            )
        ],
        usage=usage,
    )


class _RagStream:
    """The router's answer events as OpenAI chat.completion.chunk events."""

    def __init__(self, model: str, collection: str, sources_in_content: bool) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.collection = collection
        self.sources_in_content = sources_in_content

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        return self._event(
            [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        )

    async def events(
        self,
        call: grpc.aio.UnaryStreamCall[llm_pb2.AnswerRequest, llm_pb2.StreamEvent],
        events: AsyncIterator[llm_pb2.StreamEvent],
        first: llm_pb2.StreamEvent | None,
        include_usage: bool,
        meter: CallUsage,
    ) -> AsyncIterator[str]:
        answer: list[str] = []
        citations: Sequence[llm_pb2.Citation] = ()
        usage: llm_pb2.Usage | None = None
        finish_reason = "stop"
        event = first
        try:
            yield self.chunk({"role": "assistant", "content": ""})
            while event is not None:
                kind = event.WhichOneof("event")
                if kind == "delta" and event.delta:
                    answer.append(event.delta)
                    yield self.chunk({"content": event.delta})
                elif kind == "citations":
                    citations = list(event.citations.items)
                elif kind == "usage":
                    usage = event.usage
                elif kind == "done":
                    finish_reason = event.done.finish_reason or finish_reason
                    if usage is not None:
                        await meter.completed(
                            self.model, usage, event.done.provider, event.done.prompt_version
                        )
                event = await next_message(events, meter)
            found = cited_spans("".join(answer), citations, self.collection)
            tail = sources_block(citations) if self.sources_in_content else ""
            if found or tail:
                yield self.chunk(
                    {
                        "content": tail,
                        "annotations": [annotation.model_dump() for annotation in found],
                    }
                )
            yield self.chunk({}, finish_reason)
            if include_usage:
                usage_dict = ChatUsage(
                    prompt_tokens=usage.prompt_tokens if usage else 0,
                    completion_tokens=usage.completion_tokens if usage else 0,
                    total_tokens=usage.total_tokens if usage else 0,
                ).model_dump()
                yield self._event([], usage=usage_dict)
            yield "data: [DONE]\n\n"
        except grpc.aio.AioRpcError as error:
            meter.ended_early(cancelled=False)
            status, detail = rpc_error_to_http(error)
            log.warning(
                "rag stream failed",
                extra=backend_error_fields(error.code(), error.details(), status),
            )
            yield self._event([], error=openai_error(status, detail))
        except Exception:
            meter.ended_early(cancelled=False)
            log.exception("rag stream failed")
            yield self._event([], error=openai_error(500, GENERIC_INTERNAL))
        except BaseException:
            meter.ended_early(cancelled=True)  # the client left
            raise
        finally:
            call.cancel()
            meter.finish()  # a no-op once charged
