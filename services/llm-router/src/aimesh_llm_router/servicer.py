"""The LLMRouterService servicer: each RPC parses its request, runs its task, maps the result.

The tasks live in :mod:`aimesh_llm_router.tasks`, one module per RPC family (summarize,
answer, generate, conversations). Errors are raised as :mod:`aimesh_common.errors` and
mapped to status codes by the shared interceptor. Clients only supply task variables
(text, question, conversation); system prompts come from the router's templates.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc
from aimesh.retrieval.v1 import retrieval_pb2_grpc
from aimesh_common.jsonlimits import check_struct
from aimesh_llm_router.conversations import ConversationStore
from aimesh_llm_router.models import ModelRegistry
from aimesh_llm_router.resilience import Resilience
from aimesh_llm_router.tasks import answer, conversations, generate, responses, summarize
from aimesh_llm_router.tasks.common import Reply, TaskDeps, usage_message
from aimesh_llm_router.templates import PromptLibrary

Context = grpc.aio.ServicerContext[Any, Any]


class LLMRouterServicer(llm_pb2_grpc.LLMRouterServiceServicer):
    """Runs Generate, Summarize, Answer and conversations on the provider behind the
    requested alias."""

    def __init__(
        self,
        models: ModelRegistry,
        resilience: Resilience,
        retrieval: retrieval_pb2_grpc.RetrievalServiceAsyncStub,
        prompts: PromptLibrary,
        backend_timeout_seconds: float,
        conversations: ConversationStore,
        max_conversation_messages: int = 200,
        responses_retention_seconds: float = 30 * 86_400.0,
    ) -> None:
        self._deps = TaskDeps(
            models=models,
            resilience=resilience,
            retrieval=retrieval,
            prompts=prompts,
            backend_timeout=backend_timeout_seconds,
            conversations=conversations,
            max_conversation_messages=max_conversation_messages,
            responses_retention_seconds=responses_retention_seconds,
        )

    async def ListModels(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.ListModelsRequest, context: Context
    ) -> llm_pb2.ListModelsResponse:
        return llm_pb2.ListModelsResponse(
            models=[
                llm_pb2.ModelInfo(
                    id=model.alias,
                    description=model.description,
                    context_window=model.config.context_window,
                    default_for=self._deps.models.defaults_of(model.alias),
                    priced=model.config.priced,
                    price_per_1k_input=model.config.price_per_1k_input,
                    price_per_1k_output=model.config.price_per_1k_output,
                    max_tokens=model.config.max_tokens,
                    fallbacks=model.config.fallbacks,
                )
                for model in self._deps.models.aliases
            ]
        )

    async def Summarize(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.SummarizeRequest, context: Context
    ) -> llm_pb2.SummarizeResponse:
        parsed = summarize.parse(request)
        reply = await summarize.summarize(self._deps, parsed, context.time_remaining())
        return llm_pb2.SummarizeResponse(
            summary=reply.text,
            model=reply.model.alias,
            usage=usage_message(reply.usage, reply.model),
            provider=reply.provider,
            prompt_version=reply.prompt_version,
        )

    async def StreamSummarize(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.SummarizeRequest, context: Context
    ) -> AsyncIterator[llm_pb2.StreamEvent]:
        parsed = summarize.parse(request)
        async for event in summarize.stream_summary(self._deps, parsed, context.time_remaining()):
            yield event

    async def Answer(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.AnswerRequest, context: Context
    ) -> llm_pb2.AnswerResponse:
        _check_filter(request)
        question = answer.parse(self._deps, request)
        reply = await answer.answer(self._deps, question, context.time_remaining())
        return _answer_response(reply)

    async def StreamAnswer(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.AnswerRequest, context: Context
    ) -> AsyncIterator[llm_pb2.StreamEvent]:
        _check_filter(request)
        question = answer.parse(self._deps, request)
        async for event in answer.stream_answer(self._deps, question, context.time_remaining()):
            yield event

    async def Generate(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.GenerateRequest, context: Context
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        chat = generate.parse(self._deps, request)
        async for response in generate.generate(self._deps, chat, context.time_remaining()):
            yield response

    async def CreateConversation(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.CreateConversationRequest, context: Context
    ) -> llm_pb2.Conversation:
        record = await conversations.create(self._deps, request)
        return conversations.conversation_message(record)

    async def GetConversation(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.GetConversationRequest, context: Context
    ) -> llm_pb2.Conversation:
        record = await conversations.get(self._deps, request)
        return conversations.conversation_message(record)

    async def ListConversations(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.ListConversationsRequest, context: Context
    ) -> llm_pb2.ListConversationsResponse:
        records = await conversations.list_owned(self._deps, request)
        return llm_pb2.ListConversationsResponse(
            conversations=[conversations.conversation_message(record) for record in records]
        )

    async def DeleteConversation(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.DeleteConversationRequest, context: Context
    ) -> llm_pb2.DeleteConversationResponse:
        await conversations.delete(self._deps, request)
        return llm_pb2.DeleteConversationResponse()

    async def ListTenantConversations(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.ListTenantConversationsRequest, context: Context
    ) -> llm_pb2.ListTenantConversationsResponse:
        records = await conversations.list_tenant(self._deps, request)
        return llm_pb2.ListTenantConversationsResponse(
            conversations=[conversations.conversation_message(record) for record in records]
        )

    async def SendMessage(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.SendMessageRequest, context: Context
    ) -> AsyncIterator[llm_pb2.StreamEvent]:
        turn = conversations.parse_turn(request)
        async for event in conversations.send_message(self._deps, turn, context.time_remaining()):
            yield event

    async def StoreResponse(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.StoredResponse, context: Context
    ) -> llm_pb2.StoredResponse:
        return await responses.store(self._deps, request)

    async def GetResponse(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.GetResponseRequest, context: Context
    ) -> llm_pb2.StoredResponse:
        return await responses.get(self._deps, request)

    async def DeleteResponse(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.GetResponseRequest, context: Context
    ) -> llm_pb2.DeleteResponseResponse:
        await responses.delete(self._deps, request)
        return llm_pb2.DeleteResponseResponse()


def _answer_response(reply: Reply) -> llm_pb2.AnswerResponse:
    return llm_pb2.AnswerResponse(
        answer=reply.text,
        citations=reply.citations,
        model=reply.model.alias,
        usage=usage_message(reply.usage, reply.model),
        provider=reply.provider,
        prompt_version=reply.prompt_version,
        fallback_reason=reply.fallback_reason,
        replaced_model=reply.replaced_model,
    )


def _check_filter(request: llm_pb2.AnswerRequest) -> None:
    """The search filter within the depth every service accepts (INVALID_ARGUMENT), checked
    here too rather than only when retrieval gets it."""
    if request.HasField("filter"):
        check_struct(request.filter, "filter")
