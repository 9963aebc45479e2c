"""The LLMRouterService servicer: validates requests, runs tasks on the aliased provider.

Errors are raised as :mod:`aimesh_common.errors` and mapped to status codes by the
shared interceptor. Clients only supply task variables (text, question, conversation);
system prompts come from the router's templates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from typing import Any, cast, get_args

import grpc

from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc
from aimesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from aimesh_common.errors import InvalidArgument
from aimesh_llm_router.citations import filter_citations, pack_sources
from aimesh_llm_router.metrics import observe
from aimesh_llm_router.models import ModelRegistry, ResolvedModel
from aimesh_llm_router.providers.base import (
    AnswerTask,
    GenerateTask,
    Message,
    Role,
    Style,
    SummarizeTask,
)
from aimesh_llm_router.templates import PromptLibrary
from aimesh_llm_router.tokens import NO_USAGE, Usage, estimate_tokens
from aimesh_llm_router.upstream import from_rpc_error

log = logging.getLogger("aimesh.llm_router")

Context = grpc.aio.ServicerContext[Any, Any]

NO_MATCHING_DOCUMENTS = "I don't know: no documents in the collection match the question."
DEFAULT_TOP_K = 5
MAX_TOP_K = 50
MAX_WORDS = 10_000
# The token estimate counts words and punctuation; real tokenizers produce roughly a
# third more tokens for English, so only this share of the computed room is filled.
SOURCE_BUDGET_SHARE = 0.75
ROLES = frozenset(get_args(Role))
STYLES = get_args(Style)


def usage_message(usage: Usage) -> llm_pb2.Usage:
    return llm_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        estimated=usage.estimated,
    )


def _max_tokens(requested: int, model: ResolvedModel) -> int:
    """0 means the alias's maximum; larger requests are capped at it."""
    limit = model.config.max_tokens
    return limit if requested == 0 else min(requested, limit)


def _validate_messages(request: llm_pb2.GenerateRequest) -> list[Message]:
    if not request.messages:
        raise InvalidArgument("messages must contain at least one message")
    messages: list[Message] = []
    for index, message in enumerate(request.messages):
        if message.role not in ROLES:
            raise InvalidArgument(
                f"messages[{index}].role must be system, user or assistant, got {message.role!r}"
            )
        if not message.content.strip():
            raise InvalidArgument(f"messages[{index}].content must not be empty")
        messages.append(Message(role=cast(Role, message.role), content=message.content))
    if messages[-1].role != "user":
        raise InvalidArgument(f"the last message must be from the user, got {messages[-1].role!r}")
    return messages


class LLMRouterServicer(llm_pb2_grpc.LLMRouterServiceServicer):
    """Runs Generate, Summarize and Answer on the provider behind the requested alias."""

    def __init__(
        self,
        models: ModelRegistry,
        retrieval: retrieval_pb2_grpc.RetrievalServiceAsyncStub,
        prompts: PromptLibrary,
        backend_timeout_seconds: float,
    ) -> None:
        self._models = models
        self._retrieval = retrieval
        self._prompts = prompts
        self._backend_timeout = backend_timeout_seconds

    async def ListModels(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.ListModelsRequest, context: Context
    ) -> llm_pb2.ListModelsResponse:
        return llm_pb2.ListModelsResponse(
            models=[
                llm_pb2.ModelInfo(
                    id=config.alias,
                    description=config.description,
                    context_window=config.context_window,
                )
                for config in self._models.aliases
            ]
        )

    async def Summarize(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.SummarizeRequest, context: Context
    ) -> llm_pb2.SummarizeResponse:
        if not request.text.strip():
            raise InvalidArgument("text must not be empty")
        style = request.style or "brief"
        if style not in STYLES:
            raise InvalidArgument(
                f"style must be one of {', '.join(STYLES)}, got {request.style!r}"
            )
        if request.max_words > MAX_WORDS:
            raise InvalidArgument(f"max_words must be at most {MAX_WORDS}")
        model = self._models.resolve(request.model)
        task = SummarizeTask(
            text=request.text,
            style=cast(Style, style),
            max_words=request.max_words,
            max_tokens=model.config.max_tokens,
        )
        with observe(model.alias, model.provider.name, "summarize") as record:
            result = await model.provider.summarize(task)
            record.usage = result.usage
        self._log_usage("summarize", request.tenant_id, model, result.usage)
        return llm_pb2.SummarizeResponse(
            summary=result.text, model=model.alias, usage=usage_message(result.usage)
        )

    def _source_budget(self, model: ResolvedModel, question: str) -> int:
        overhead = sum(
            estimate_tokens(str(message.content))
            for message in self._prompts.qa.render(question=question, sources="")
        )
        room = model.config.context_window - model.config.max_tokens - overhead
        return math.floor(room * SOURCE_BUDGET_SHARE)

    async def Answer(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.AnswerRequest, context: Context
    ) -> llm_pb2.AnswerResponse:
        question = request.question.strip()
        if not question:
            raise InvalidArgument("question must not be empty")
        if not request.tenant_id:
            raise InvalidArgument("tenant_id must not be empty")
        if not request.collection:
            raise InvalidArgument("collection must not be empty")
        if request.top_k > MAX_TOP_K:
            raise InvalidArgument(f"top_k must be between 1 and {MAX_TOP_K}, got {request.top_k}")
        model = self._models.resolve(request.model)
        budget = self._source_budget(model, question)
        too_long = InvalidArgument(
            f"the question is too long for model {model.alias!r} "
            f"(context window {model.config.context_window} tokens)"
        )
        if budget <= 0:
            raise too_long
        with observe(model.alias, model.provider.name, "answer") as record:
            chunks = await self._search_chunks(request, request.top_k or DEFAULT_TOP_K)
            if not chunks:
                self._log_usage("answer", request.tenant_id, model, NO_USAGE)
                return llm_pb2.AnswerResponse(
                    answer=NO_MATCHING_DOCUMENTS, model=model.alias, usage=usage_message(NO_USAGE)
                )
            sources = pack_sources([chunk.text for chunk in chunks], budget)
            if not sources:
                raise too_long
            result = await model.provider.answer(
                AnswerTask(question=question, sources=sources, max_tokens=model.config.max_tokens)
            )
            record.usage = result.usage
        cited = filter_citations(result.text, {source.number for source in sources})
        citations = []
        for number in cited.cited:
            chunk = chunks[number - 1]
            citation = llm_pb2.Citation(
                source=number,
                document_id=chunk.document_id,
                chunk_id=chunk.chunk_id,
                text=chunk.text,
                score=chunk.score,
            )
            if chunk.HasField("metadata"):
                citation.metadata.CopyFrom(chunk.metadata)
            citations.append(citation)
        self._log_usage("answer", request.tenant_id, model, result.usage, sources=len(sources))
        return llm_pb2.AnswerResponse(
            answer=cited.text,
            citations=citations,
            model=model.alias,
            usage=usage_message(result.usage),
        )

    async def _search_chunks(
        self, request: llm_pb2.AnswerRequest, top_k: int
    ) -> list[retrieval_pb2.ScoredChunk]:
        search = retrieval_pb2.SearchRequest(
            tenant_id=request.tenant_id,
            collection=request.collection,
            query=request.question.strip(),
            top_k=top_k,
        )
        if request.HasField("filter"):
            search.filter.CopyFrom(request.filter)
        try:
            reply = await self._retrieval.Search(search, timeout=self._backend_timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, "retrieval") from None
        return [chunk for chunk in reply.chunks if chunk.text.strip()]

    async def Generate(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.GenerateRequest, context: Context
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        messages = _validate_messages(request)
        if request.HasField("temperature") and not 0.0 <= request.temperature <= 2.0:
            raise InvalidArgument(
                f"temperature must be between 0 and 2, got {request.temperature:g}"
            )
        model = self._models.resolve(request.model)
        task = GenerateTask(
            messages=messages,
            max_tokens=_max_tokens(request.max_tokens, model),
            temperature=request.temperature if request.HasField("temperature") else None,
        )
        with observe(model.alias, model.provider.name, "generate") as record:
            async for delta in model.provider.generate(task):
                response = llm_pb2.GenerateResponse(delta=delta.text, model=model.alias)
                if delta.finish_reason is not None:
                    response.finish_reason = delta.finish_reason
                if delta.usage is not None:
                    record.usage = delta.usage
                    response.usage.CopyFrom(usage_message(delta.usage))
                yield response
        if record.usage is not None:
            self._log_usage("generate", request.tenant_id, model, record.usage)

    @staticmethod
    def _log_usage(
        task: str, tenant_id: str, model: ResolvedModel, usage: Usage, **extra: object
    ) -> None:
        log.info(
            "task done",
            extra={
                "task": task,
                "tenant_id": tenant_id,
                "model": model.alias,
                "provider": model.provider.name,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "estimated": usage.estimated,
                **extra,
            },
        )
