"""The LLMRouterService servicer: validates requests, runs tasks on the aliased provider.

Errors are raised as :mod:`aimesh_common.errors` and mapped to status codes by the
shared interceptor. Clients only supply task variables (text, question, conversation);
system prompts come from the router's templates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast, get_args

import grpc

from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc
from aimesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from aimesh_common.errors import FailedPrecondition, InvalidArgument, Unavailable
from aimesh_llm_router.citations import Source, filter_citations, pack_sources, render_sources
from aimesh_llm_router.conversations import ConversationRecord, ConversationStore, StoredMessage
from aimesh_llm_router.metrics import TaskRecord, observe
from aimesh_llm_router.models import ModelRegistry, ResolvedModel
from aimesh_llm_router.providers.base import (
    AnswerTask,
    Completion,
    Delta,
    GenerateTask,
    Message,
    Role,
    Style,
    SummarizeTask,
)
from aimesh_llm_router.resilience import Resilience
from aimesh_llm_router.stops import StopMatcher, validate_stops
from aimesh_llm_router.templates import PromptLibrary, Task
from aimesh_llm_router.tokens import NO_USAGE, Usage, count_tokens, estimate_tokens, split_by_tokens
from aimesh_llm_router.tools import ToolOptions, message_tool_calls, tool_options
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
# Share of the computed room filled with text when summarizing (tokenizers differ).
SUMMARY_BUDGET_SHARE = 0.9
# Map-reduce rounds before giving up on a text (each shrinks it by the summary ratio).
MAX_REDUCE_ROUNDS = 4
# Tokens a chat message costs beyond its text (role markers).
MESSAGE_OVERHEAD_TOKENS = 4
# Share of a grounded conversation's context given to sources.
GROUNDING_SHARE = 0.4
MAX_TITLE_CHARS = 200
DEFAULT_CONVERSATION_LIST = 50
MAX_CONVERSATION_LIST = 200
# The tenant admins' listing (ListTenantConversations).
DEFAULT_TENANT_CONVERSATION_LIST = 100
MAX_TENANT_CONVERSATION_LIST = 500
# The user turn sent to the model in a grounded conversation (stored is the bare message).
GROUNDED_MESSAGE = (
    "Sources:\n{sources}\n\nAnswer using these sources where they help, citing them as [n]."
    "\n\nMessage: {question}"
)
ROLES = frozenset(get_args(Role))
STYLES = get_args(Style)


def usage_message(usage: Usage, model: ResolvedModel) -> llm_pb2.Usage:
    """Usage with its cost at the prices of the alias that answered."""
    return llm_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        estimated=usage.estimated,
        cost_usd=model.config.cost(usage.prompt_tokens, usage.completion_tokens),
    )


def prompt_version(model: ResolvedModel, task: Task) -> str:
    """The ``prompt_version`` of a reply ``model`` produced for ``task``."""
    return model.provider.prompt_version(task)


def _max_tokens(requested: int, model: ResolvedModel) -> int:
    """0 means the alias's maximum; larger requests are capped at it."""
    limit = model.config.max_tokens
    return limit if requested == 0 else min(requested, limit)


def _validate_messages(request: llm_pb2.GenerateRequest) -> list[Message]:
    if not request.messages:
        raise InvalidArgument("messages must contain at least one message")
    messages: list[Message] = []
    called: set[str] = set()
    for index, message in enumerate(request.messages):
        if message.role not in ROLES:
            raise InvalidArgument(
                f"messages[{index}].role must be system, user, assistant or tool, "
                f"got {message.role!r}"
            )
        if message.tool_calls and message.role != "assistant":
            raise InvalidArgument(f"messages[{index}]: only assistant messages call tools")
        calls = message_tool_calls(message, index)
        if message.role == "tool" and not message.tool_call_id:
            raise InvalidArgument(f"messages[{index}].tool_call_id must name the call answered")
        called.update(call.id for call in calls)
        if message.role == "tool" and message.tool_call_id not in called:
            raise InvalidArgument(
                f"messages[{index}] answers tool call {message.tool_call_id!r}, which no "
                "earlier assistant message made"
            )
        if not message.content.strip() and not calls:
            raise InvalidArgument(f"messages[{index}].content must not be empty")
        messages.append(
            Message(
                role=cast(Role, message.role),
                content=message.content,
                tool_calls=calls,
                tool_call_id=message.tool_call_id if message.role == "tool" else "",
            )
        )
    if messages[-1].role not in ("user", "tool"):
        raise InvalidArgument(
            f"the last message must be from the user or a tool, got {messages[-1].role!r}"
        )
    return messages


def _uses_tools(messages: list[Message], tools: ToolOptions) -> bool:
    """Whether the call needs a provider that understands tools (tools or tool messages)."""
    return bool(tools.tools) or any(m.role == "tool" or m.tool_calls for m in messages)


def _tool_chain(chain: list[ResolvedModel]) -> list[ResolvedModel]:
    """``chain`` without the aliases whose provider cannot take tools; the requested alias
    itself must take them."""
    if not chain[0].provider.supports_tools:
        raise InvalidArgument(
            f"model {chain[0].alias!r} does not support tools (its provider is "
            f"{chain[0].provider.name!r}); use a model served by a tool-capable provider"
        )
    return [model for model in chain if model.provider.supports_tools]


def _citation(number: int, chunk: retrieval_pb2.ScoredChunk) -> llm_pb2.Citation:
    citation = llm_pb2.Citation(
        source=number,
        document_id=chunk.document_id,
        chunk_id=chunk.chunk_id,
        text=chunk.text,
        score=chunk.score,
    )
    if chunk.HasField("metadata"):
        citation.metadata.CopyFrom(chunk.metadata)
    return citation


@dataclass
class StreamOutcome:
    """What a relayed stream produced: filled in as it runs."""

    usage: Usage = NO_USAGE
    model: ResolvedModel | None = None
    finish_reason: str = "stop"
    text: str = ""


class LLMRouterServicer(llm_pb2_grpc.LLMRouterServiceServicer):
    """Runs Generate, Summarize and Answer on the provider behind the requested alias."""

    def __init__(
        self,
        models: ModelRegistry,
        resilience: Resilience,
        retrieval: retrieval_pb2_grpc.RetrievalServiceAsyncStub,
        prompts: PromptLibrary,
        backend_timeout_seconds: float,
        conversations: ConversationStore,
        max_conversation_messages: int = 200,
    ) -> None:
        self._conversations = conversations
        self._max_messages = max_conversation_messages
        self._models = models
        self._resilience = resilience
        self._retrieval = retrieval
        self._prompts = prompts
        self._backend_timeout = backend_timeout_seconds

    async def ListModels(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.ListModelsRequest, context: Context
    ) -> llm_pb2.ListModelsResponse:
        return llm_pb2.ListModelsResponse(
            models=[
                llm_pb2.ModelInfo(
                    id=model.alias,
                    description=model.description,
                    context_window=model.config.context_window,
                )
                for model in self._models.aliases
            ]
        )

    async def Summarize(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.SummarizeRequest, context: Context
    ) -> llm_pb2.SummarizeResponse:
        style = self._validate_summarize(request)
        chain = self._models.chain(request.model)
        first = chain[0]
        deadline = self._resilience.deadline(first, context.time_remaining())
        with observe(first.alias, first.provider.name, "summarize", request.tenant_id) as record:
            text, spent = await self._reduce_to_fit(chain, request.text, deadline)

            async def run(model: ResolvedModel) -> Completion:
                return await model.provider.summarize(
                    self._summarize_task(model, text, style, request.max_words)
                )

            model, result = await self._resilience.complete(chain, run, deadline)
            usage = spent.plus(result.usage)
            self._account(record, model, usage)
        self._log_usage("summarize", request.tenant_id, model, usage)
        return llm_pb2.SummarizeResponse(
            summary=result.text,
            model=model.alias,
            usage=usage_message(usage, model),
            provider=model.provider.name,
            prompt_version=prompt_version(model, "summarize"),
        )

    @staticmethod
    def _validate_summarize(request: llm_pb2.SummarizeRequest) -> Style:
        if not request.text.strip():
            raise InvalidArgument("text must not be empty")
        style = request.style or "brief"
        if style not in STYLES:
            raise InvalidArgument(
                f"style must be one of {', '.join(STYLES)}, got {request.style!r}"
            )
        if request.max_words > MAX_WORDS:
            raise InvalidArgument(f"max_words must be at most {MAX_WORDS}")
        return cast(Style, style)

    @staticmethod
    def _summarize_task(model: ResolvedModel, text: str, style: Style, words: int) -> SummarizeTask:
        return SummarizeTask(
            text=text, style=style, max_words=words, max_tokens=model.config.max_tokens
        )

    def _text_room(self, model: ResolvedModel) -> int:
        """Tokens of text that fit one summarize call of ``model``."""
        overhead = sum(
            count_tokens(str(message.content))
            for message in self._prompts.summarize.render(
                text="", style_instructions="", max_words=MAX_WORDS
            )
        )
        room = model.config.context_window - model.config.max_tokens - overhead
        return max(0, math.floor(room * SUMMARY_BUDGET_SHARE))

    async def _reduce_to_fit(
        self, chain: list[ResolvedModel], text: str, deadline: float
    ) -> tuple[str, Usage]:
        """Map-reduce: while ``text`` exceeds the context, summarize it chunk by chunk.

        Each chunk is summarized in detail (map) and the partial summaries, joined, become
        the new text; the caller's summary of that is the reduce step. Returns the text
        that fits and the usage spent on the map calls.
        """
        room = self._text_room(chain[0])
        if room <= 0:
            raise InvalidArgument(
                f"model {chain[0].alias!r} has no room for text (context window "
                f"{chain[0].config.context_window}, max_tokens {chain[0].config.max_tokens})"
            )
        spent = NO_USAGE
        for _ in range(MAX_REDUCE_ROUNDS):
            if count_tokens(text) <= room:
                return text, spent
            partials: list[str] = []
            for piece in split_by_tokens(text, room):

                async def run(model: ResolvedModel, piece: str = piece) -> Completion:
                    return await model.provider.summarize(
                        self._summarize_task(model, piece, "detailed", 0)
                    )

                _, result = await self._resilience.complete(chain, run, deadline)
                spent = spent.plus(result.usage)
                partials.append(result.text)
            text = "\n\n".join(partials)
        if count_tokens(text) > room:
            raise InvalidArgument("the text is too long to summarize with this model")
        return text, spent

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
        question, chain, budget = self._validate_answer(request)
        model = chain[0]
        deadline = self._resilience.deadline(model, context.time_remaining())
        with observe(model.alias, model.provider.name, "answer", request.tenant_id) as record:
            chunks = await self._search_chunks(request, request.top_k or DEFAULT_TOP_K)
            if not chunks:
                self._log_usage("answer", request.tenant_id, model, NO_USAGE)
                return llm_pb2.AnswerResponse(
                    answer=NO_MATCHING_DOCUMENTS,
                    model=model.alias,
                    usage=usage_message(NO_USAGE, model),
                )
            packed = self._packer(question, chunks, model, budget)

            async def run(candidate: ResolvedModel) -> Completion:
                return await candidate.provider.answer(
                    AnswerTask(
                        question=question,
                        sources=packed(candidate),
                        max_tokens=candidate.config.max_tokens,
                    )
                )

            model, result = await self._resilience.complete(chain, run, deadline)
            sources = packed(model)
            self._account(record, model, result.usage)
        cited = filter_citations(result.text, {source.number for source in sources})
        citations = [_citation(number, chunks[number - 1]) for number in cited.cited]
        self._log_usage("answer", request.tenant_id, model, result.usage, sources=len(sources))
        return llm_pb2.AnswerResponse(
            answer=cited.text,
            citations=citations,
            model=model.alias,
            usage=usage_message(result.usage, model),
            provider=model.provider.name,
            prompt_version=prompt_version(model, "qa"),
        )

    def _validate_answer(
        self, request: llm_pb2.AnswerRequest
    ) -> tuple[str, list[ResolvedModel], int]:
        """The question, the alias chain and the source budget of the first alias."""
        question = request.question.strip()
        if not question:
            raise InvalidArgument("question must not be empty")
        if not request.tenant_id:
            raise InvalidArgument("tenant_id must not be empty")
        if not request.collection:
            raise InvalidArgument("collection must not be empty")
        if request.top_k > MAX_TOP_K:
            raise InvalidArgument(f"top_k must be between 1 and {MAX_TOP_K}, got {request.top_k}")
        chain = self._models.chain(request.model)
        budget = self._source_budget(chain[0], question)
        if budget <= 0:
            raise self._too_long(chain[0])
        return question, chain, budget

    @staticmethod
    def _too_long(model: ResolvedModel) -> InvalidArgument:
        return InvalidArgument(
            f"the question is too long for model {model.alias!r} "
            f"(context window {model.config.context_window} tokens)"
        )

    def _packer(
        self,
        question: str,
        chunks: list[retrieval_pb2.ScoredChunk],
        first: ResolvedModel,
        budget: int,
    ) -> Callable[[ResolvedModel], list[Source]]:
        """Sources packed per alias: fallbacks with a smaller context get fewer."""
        texts = [chunk.text for chunk in chunks]
        packed = {first.alias: pack_sources(texts, budget)}
        if not packed[first.alias]:
            raise self._too_long(first)

        def sources(model: ResolvedModel) -> list[Source]:
            if model.alias not in packed:
                room = self._source_budget(model, question)
                packed[model.alias] = pack_sources(texts, room) if room > 0 else []
            if not packed[model.alias]:
                raise Unavailable(f"the question does not fit model {model.alias!r}")
            return list(packed[model.alias])

        return sources

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
        tools = tool_options(request)
        stops = validate_stops(request.stop)
        chain = self._models.chain(request.model)
        if _uses_tools(messages, tools):
            chain = _tool_chain(chain)
        temperature = request.temperature if request.HasField("temperature") else None

        def start(model: ResolvedModel) -> AsyncIterator[Delta]:
            return model.provider.generate(
                GenerateTask(
                    messages=messages,
                    max_tokens=_max_tokens(request.max_tokens, model),
                    temperature=temperature,
                    tools=tools,
                    stop=stops,
                )
            )

        first = chain[0]
        answered = first
        deadline = self._resilience.deadline(first, context.time_remaining())
        matcher = StopMatcher(stops)
        with observe(first.alias, first.provider.name, "generate", request.tenant_id) as record:
            async for model, delta in self._resilience.stream(chain, start, deadline):
                answered = model
                text = matcher.feed(delta.text) if delta.text else ""
                if delta.finish_reason is not None:
                    text += matcher.flush()
                elif not text and delta.usage is None and not delta.tool_calls:
                    continue  # held back (a possible stop sequence) or cut after one
                response = llm_pb2.GenerateResponse(
                    delta=text,
                    model=model.alias,
                    provider=model.provider.name,
                    prompt_version=prompt_version(model, "chat"),
                )
                if delta.finish_reason is not None:
                    response.finish_reason = "stop" if matcher.stopped else delta.finish_reason
                if delta.usage is not None:
                    self._account(record, model, delta.usage)
                    response.usage.CopyFrom(usage_message(delta.usage, model))
                response.tool_calls.extend(call.proto() for call in delta.tool_calls)
                yield response
        if record.usage is not None:
            self._log_usage("generate", request.tenant_id, answered, record.usage)

    async def _relay(
        self,
        chain: list[ResolvedModel],
        start: Callable[[ResolvedModel], AsyncIterator[Delta]],
        deadline: float,
        record: TaskRecord,
        outcome: StreamOutcome,
        before_first: Callable[[ResolvedModel], list[llm_pb2.StreamEvent]] | None = None,
    ) -> AsyncIterator[llm_pb2.StreamEvent]:
        """Delta events of the first stream along ``chain``; fills ``outcome``.

        ``before_first`` supplies events (e.g. sources) once the answering model is known.
        Usage and done are left to the caller, which may add citations before them.
        """
        started = False
        pieces: list[str] = []
        async for model, delta in self._resilience.stream(chain, start, deadline):
            if not started:
                started = True
                outcome.model = model
                for event in before_first(model) if before_first is not None else []:
                    yield event
            if delta.text:
                pieces.append(delta.text)
                yield llm_pb2.StreamEvent(delta=delta.text)
            if delta.finish_reason is not None:
                outcome.finish_reason = delta.finish_reason
            if delta.usage is not None:
                outcome.usage = outcome.usage.plus(delta.usage)
        outcome.text = "".join(pieces)
        if outcome.model is not None:
            self._account(record, outcome.model, outcome.usage)

    @staticmethod
    def _closing_events(outcome: StreamOutcome, task: Task) -> list[llm_pb2.StreamEvent]:
        model = outcome.model
        if model is None:  # an empty stream: nothing answered
            return [llm_pb2.StreamEvent(done=llm_pb2.StreamDone(finish_reason="stop"))]
        return [
            llm_pb2.StreamEvent(usage=usage_message(outcome.usage, model)),
            llm_pb2.StreamEvent(
                done=llm_pb2.StreamDone(
                    model=model.alias,
                    finish_reason=outcome.finish_reason,
                    provider=model.provider.name,
                    prompt_version=prompt_version(model, task),
                )
            ),
        ]

    async def StreamSummarize(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.SummarizeRequest, context: Context
    ) -> AsyncIterator[llm_pb2.StreamEvent]:
        style = self._validate_summarize(request)
        chain = self._models.chain(request.model)
        first = chain[0]
        deadline = self._resilience.deadline(first, context.time_remaining())
        with observe(first.alias, first.provider.name, "summarize", request.tenant_id) as record:
            text, spent = await self._reduce_to_fit(chain, request.text, deadline)
            outcome = StreamOutcome(usage=spent)

            def start(model: ResolvedModel) -> AsyncIterator[Delta]:
                return model.provider.stream_summarize(
                    self._summarize_task(model, text, style, request.max_words)
                )

            async for event in self._relay(chain, start, deadline, record, outcome):
                yield event
        for event in self._closing_events(outcome, "summarize"):
            yield event

    async def StreamAnswer(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.AnswerRequest, context: Context
    ) -> AsyncIterator[llm_pb2.StreamEvent]:
        question, chain, budget = self._validate_answer(request)
        model = chain[0]
        deadline = self._resilience.deadline(model, context.time_remaining())
        outcome = StreamOutcome()
        with observe(model.alias, model.provider.name, "answer", request.tenant_id) as record:
            chunks = await self._search_chunks(request, request.top_k or DEFAULT_TOP_K)
            if not chunks:
                yield llm_pb2.StreamEvent(sources=llm_pb2.SourceList())
                yield llm_pb2.StreamEvent(delta=NO_MATCHING_DOCUMENTS)
                # The router answers itself: no provider, no template.
                yield llm_pb2.StreamEvent(usage=usage_message(NO_USAGE, model))
                yield llm_pb2.StreamEvent(
                    done=llm_pb2.StreamDone(model=model.alias, finish_reason="stop")
                )
                return
            packed = self._packer(question, chunks, model, budget)

            def start(candidate: ResolvedModel) -> AsyncIterator[Delta]:
                return candidate.provider.stream_answer(
                    AnswerTask(
                        question=question,
                        sources=packed(candidate),
                        max_tokens=candidate.config.max_tokens,
                    )
                )

            def sources(candidate: ResolvedModel) -> list[llm_pb2.StreamEvent]:
                given = range(1, len(packed(candidate)) + 1)
                items = [_citation(number, chunks[number - 1]) for number in given]
                return [llm_pb2.StreamEvent(sources=llm_pb2.SourceList(items=items))]

            async for event in self._relay(chain, start, deadline, record, outcome, sources):
                yield event
        answered = outcome.model or model
        valid = set(range(1, len(packed(answered)) + 1))
        cited = filter_citations(outcome.text, valid)
        yield llm_pb2.StreamEvent(
            citations=llm_pb2.SourceList(
                items=[_citation(number, chunks[number - 1]) for number in cited.cited]
            )
        )
        for event in self._closing_events(outcome, "qa"):
            yield event

    @staticmethod
    def _owner(tenant_id: str, user_id: str) -> None:
        if not tenant_id:
            raise InvalidArgument("tenant_id must not be empty")
        if not user_id:
            raise InvalidArgument("user_id must not be empty")

    @staticmethod
    def _conversation_message(record: ConversationRecord) -> llm_pb2.Conversation:
        return llm_pb2.Conversation(
            id=record.id,
            model=record.model,
            collection=record.collection,
            title=record.title,
            created_at=record.created_at,
            messages=[
                llm_pb2.ChatMessage(role=message.role, content=message.content)
                for message in record.messages
            ],
            message_count=record.message_count,
            user_id=record.user_id,
            updated_at=record.updated_at,
            deleted_at=record.deleted_at or 0.0,
        )

    async def CreateConversation(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.CreateConversationRequest, context: Context
    ) -> llm_pb2.Conversation:
        self._owner(request.tenant_id, request.user_id)
        model = self._models.resolve(request.model)
        if len(request.title) > MAX_TITLE_CHARS:
            raise InvalidArgument(f"title must be at most {MAX_TITLE_CHARS} characters")
        record = await self._conversations.create(
            request.tenant_id, request.user_id, model.alias, request.collection, request.title
        )
        return self._conversation_message(record)

    async def GetConversation(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.GetConversationRequest, context: Context
    ) -> llm_pb2.Conversation:
        self._owner(request.tenant_id, request.user_id)
        record = await self._conversations.get(
            request.tenant_id, request.user_id, request.conversation_id
        )
        return self._conversation_message(record)

    async def ListConversations(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.ListConversationsRequest, context: Context
    ) -> llm_pb2.ListConversationsResponse:
        self._owner(request.tenant_id, request.user_id)
        limit = request.limit or DEFAULT_CONVERSATION_LIST
        if limit > MAX_CONVERSATION_LIST:
            raise InvalidArgument(
                f"limit must be between 1 and {MAX_CONVERSATION_LIST} (got {request.limit})"
            )
        records = await self._conversations.list_owned(request.tenant_id, request.user_id, limit)
        return llm_pb2.ListConversationsResponse(
            conversations=[self._conversation_message(record) for record in records]
        )

    async def DeleteConversation(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.DeleteConversationRequest, context: Context
    ) -> llm_pb2.DeleteConversationResponse:
        self._owner(request.tenant_id, request.user_id)
        await self._conversations.delete(
            request.tenant_id, request.user_id, request.conversation_id
        )
        return llm_pb2.DeleteConversationResponse()

    async def ListTenantConversations(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.ListTenantConversationsRequest, context: Context
    ) -> llm_pb2.ListTenantConversationsResponse:
        if not request.tenant_id:
            raise InvalidArgument("tenant_id must not be empty")
        limit = request.limit or DEFAULT_TENANT_CONVERSATION_LIST
        if limit > MAX_TENANT_CONVERSATION_LIST:
            raise InvalidArgument(
                f"limit must be between 1 and {MAX_TENANT_CONVERSATION_LIST} (got {request.limit})"
            )
        records = await self._conversations.list_tenant(
            request.tenant_id,
            user_id=request.user_id or None,
            include_deleted=request.include_deleted,
            limit=limit,
        )
        return llm_pb2.ListTenantConversationsResponse(
            conversations=[self._conversation_message(record) for record in records]
        )

    def _trim_history(self, model: ResolvedModel, messages: list[Message]) -> list[Message]:
        """The newest messages that fit the context next to the reply; the oldest go first."""
        overhead = sum(
            count_tokens(str(message.content))
            for message in self._prompts.chat.render(conversation=[])
        )
        room = model.config.context_window - model.config.max_tokens - overhead
        room = math.floor(room * SUMMARY_BUDGET_SHARE)
        kept: list[Message] = []
        used = 0
        for message in reversed(messages):
            cost = count_tokens(message.content) + MESSAGE_OVERHEAD_TOKENS
            if used + cost > room:
                break
            kept.append(message)
            used += cost
        if not kept:
            raise InvalidArgument(
                f"the message is too long for model {model.alias!r} "
                f"(context window {model.config.context_window} tokens)"
            )
        kept.reverse()
        # A conversation sent to a model starts with a user turn.
        while kept and kept[0].role != "user":
            kept.pop(0)
        return kept

    async def SendMessage(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.SendMessageRequest, context: Context
    ) -> AsyncIterator[llm_pb2.StreamEvent]:
        self._owner(request.tenant_id, request.user_id)
        content = request.content.strip()
        if not content:
            raise InvalidArgument("content must not be empty")
        if request.HasField("temperature") and not 0.0 <= request.temperature <= 2.0:
            raise InvalidArgument(
                f"temperature must be between 0 and 2, got {request.temperature:g}"
            )
        record = await self._conversations.get(
            request.tenant_id, request.user_id, request.conversation_id
        )
        if len(record.messages) + 2 > self._max_messages:
            raise FailedPrecondition(
                f"conversation {record.id!r} is full ({self._max_messages} messages); "
                "start a new one"
            )
        chain = self._models.chain(record.model)
        first = chain[0]
        temperature = request.temperature if request.HasField("temperature") else None
        history = [Message(role=m.role, content=m.content) for m in record.messages]
        chunks: list[retrieval_pb2.ScoredChunk] = []
        sources: list[Source] = []
        question = content
        if record.collection:
            chunks = await self._search_chunks(
                llm_pb2.AnswerRequest(
                    question=content, collection=record.collection, tenant_id=record.tenant_id
                ),
                DEFAULT_TOP_K,
            )
            room = math.floor(
                (first.config.context_window - first.config.max_tokens) * GROUNDING_SHARE
            )
            sources = pack_sources([chunk.text for chunk in chunks], room)
            if sources:
                question = GROUNDED_MESSAGE.format(
                    sources=render_sources(sources), question=content
                )
        deadline = self._resilience.deadline(first, context.time_remaining())
        outcome = StreamOutcome()
        with observe(first.alias, first.provider.name, "chat", request.tenant_id) as record_:

            def start(model: ResolvedModel) -> AsyncIterator[Delta]:
                turn = [*history, Message(role="user", content=question)]
                return model.provider.generate(
                    GenerateTask(
                        messages=self._trim_history(model, turn),
                        max_tokens=_max_tokens(request.max_tokens, model),
                        temperature=temperature,
                        sources=tuple(sources),
                        question=content,
                    )
                )

            if record.collection:
                given = [_citation(n, chunks[n - 1]) for n in range(1, len(sources) + 1)]
                yield llm_pb2.StreamEvent(sources=llm_pb2.SourceList(items=given))
            async for event in self._relay(chain, start, deadline, record_, outcome):
                yield event
        reply = outcome.text
        if record.collection:
            cited = filter_citations(reply, {source.number for source in sources})
            yield llm_pb2.StreamEvent(
                citations=llm_pb2.SourceList(
                    items=[_citation(n, chunks[n - 1]) for n in cited.cited]
                )
            )
        # Stored once the reply is complete: a cancelled reply leaves no half message.
        await self._conversations.append(
            request.tenant_id,
            request.user_id,
            record.id,
            [StoredMessage("user", content), StoredMessage("assistant", reply)],
        )
        for event in self._closing_events(outcome, "chat"):
            yield event

    @staticmethod
    def _account(record: TaskRecord, model: ResolvedModel, usage: Usage) -> None:
        record.answered_by(model.alias, model.provider.name)
        record.usage = usage
        record.cost_usd = model.config.cost(usage.prompt_tokens, usage.completion_tokens)

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
