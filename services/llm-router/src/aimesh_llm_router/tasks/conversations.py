"""The conversation RPCs: create, get, list and delete a user's conversations, and
SendMessage, which replies with the stored history as context (grounded in a collection
when the conversation names one) and stores the turn once the reply is complete.

The store itself is :mod:`aimesh_llm_router.conversations`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aimesh.llm.v1 import llm_pb2
from aimesh.retrieval.v1 import retrieval_pb2
from aimesh_common.errors import FailedPrecondition, InvalidArgument
from aimesh_common.limits import DEFAULT_TOP_K
from aimesh_llm_router.citations import Source, filter_citations, pack_sources, render_sources
from aimesh_llm_router.conversations import ConversationRecord, StoredMessage
from aimesh_llm_router.metrics import observe
from aimesh_llm_router.models import ResolvedModel
from aimesh_llm_router.providers.base import Delta, GenerateTask, Message
from aimesh_llm_router.tasks.common import (
    TEXT_BUDGET_SHARE,
    Spent,
    StreamOutcome,
    TaskDeps,
    closing_events,
    log_usage,
    max_tokens,
    relay,
    temperature,
)
from aimesh_llm_router.tasks.grounding import citations, search_chunks
from aimesh_llm_router.tokens import count_tokens

MAX_TITLE_CHARS = 200
DEFAULT_CONVERSATION_LIST = 50
MAX_CONVERSATION_LIST = 200
# The tenant admins' listing (ListTenantConversations).
DEFAULT_TENANT_CONVERSATION_LIST = 100
MAX_TENANT_CONVERSATION_LIST = 500
# Tokens a chat message costs beyond its text (role markers).
MESSAGE_OVERHEAD_TOKENS = 4
# Share of a grounded conversation's context given to sources.
GROUNDING_SHARE = 0.4
# The user turn sent to the model in a grounded conversation (stored is the bare message).
GROUNDED_MESSAGE = (
    "Sources:\n{sources}\n\nAnswer using these sources where they help, citing them as [n]."
    "\n\nMessage: {question}"
)


def check_owner(tenant_id: str, user_id: str) -> None:
    """Every conversation RPC names its owner: a tenant and a user."""
    if not tenant_id:
        raise InvalidArgument("tenant_id must not be empty")
    if not user_id:
        raise InvalidArgument("user_id must not be empty")


def conversation_message(record: ConversationRecord) -> llm_pb2.Conversation:
    """A stored conversation as the RPCs return it."""
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


async def create(deps: TaskDeps, request: llm_pb2.CreateConversationRequest) -> ConversationRecord:
    """A new empty conversation with a known alias (stored under its resolved name)."""
    check_owner(request.tenant_id, request.user_id)
    model = deps.models.resolve(request.model, "qa" if request.collection else "chat")
    if len(request.title) > MAX_TITLE_CHARS:
        raise InvalidArgument(f"title must be at most {MAX_TITLE_CHARS} characters")
    return await deps.conversations.create(
        request.tenant_id, request.user_id, model.alias, request.collection, request.title
    )


async def get(deps: TaskDeps, request: llm_pb2.GetConversationRequest) -> ConversationRecord:
    check_owner(request.tenant_id, request.user_id)
    return await deps.conversations.get(request.tenant_id, request.user_id, request.conversation_id)


async def list_owned(
    deps: TaskDeps, request: llm_pb2.ListConversationsRequest
) -> list[ConversationRecord]:
    """The owner's newest conversations, at most ``limit`` (default 50, at most 200)."""
    check_owner(request.tenant_id, request.user_id)
    limit = request.limit or DEFAULT_CONVERSATION_LIST
    if limit > MAX_CONVERSATION_LIST:
        raise InvalidArgument(
            f"limit must be between 1 and {MAX_CONVERSATION_LIST} (got {request.limit})"
        )
    return await deps.conversations.list_owned(request.tenant_id, request.user_id, limit)


async def list_tenant(
    deps: TaskDeps, request: llm_pb2.ListTenantConversationsRequest
) -> list[ConversationRecord]:
    """A tenant's conversations for its admins, most recently active first (metadata; the
    messages are not read)."""
    if not request.tenant_id:
        raise InvalidArgument("tenant_id must not be empty")
    limit = request.limit or DEFAULT_TENANT_CONVERSATION_LIST
    if limit > MAX_TENANT_CONVERSATION_LIST:
        raise InvalidArgument(
            f"limit must be between 1 and {MAX_TENANT_CONVERSATION_LIST} (got {request.limit})"
        )
    return await deps.conversations.list_tenant(
        request.tenant_id,
        user_id=request.user_id or None,
        include_deleted=request.include_deleted,
        limit=limit,
    )


async def delete(deps: TaskDeps, request: llm_pb2.DeleteConversationRequest) -> None:
    check_owner(request.tenant_id, request.user_id)
    await deps.conversations.delete(request.tenant_id, request.user_id, request.conversation_id)


@dataclass(frozen=True)
class Turn:
    """A checked SendMessage request."""

    tenant_id: str
    user_id: str
    conversation_id: str
    content: str
    temperature: float | None
    max_tokens: int


def parse_turn(request: llm_pb2.SendMessageRequest) -> Turn:
    """The request, checked: owner, a non-empty message, temperature in range."""
    check_owner(request.tenant_id, request.user_id)
    content = request.content.strip()
    if not content:
        raise InvalidArgument("content must not be empty")
    return Turn(
        tenant_id=request.tenant_id,
        user_id=request.user_id,
        conversation_id=request.conversation_id,
        content=content,
        temperature=temperature(request),
        max_tokens=request.max_tokens,
    )


@dataclass(frozen=True)
class Grounding:
    """What a grounded conversation's turn gives the model: the chunks found, the
    sources packed from them, and the user turn that carries the sources."""

    chunks: list[retrieval_pb2.ScoredChunk]
    sources: list[Source]
    question: str
    # The bare message's embedding from the search (empty without a collection).
    question_vector: list[float] = field(default_factory=list)


async def send_message(
    deps: TaskDeps, turn: Turn, time_remaining: float | None
) -> AsyncIterator[llm_pb2.StreamEvent]:
    """The reply as events (sources and citations when grounded), then usage and done;
    the turn is stored once the reply is complete."""
    record = await deps.conversations.get(turn.tenant_id, turn.user_id, turn.conversation_id)
    limit = deps.max_conversation_messages
    if len(record.messages) + 2 > limit:
        raise FailedPrecondition(
            f"conversation {record.id!r} is full ({limit} messages); start a new one"
        )
    chain = deps.models.chain(record.model, tenant_id=turn.tenant_id)
    first = chain[0]
    history = [Message(role=m.role, content=m.content) for m in record.messages]
    grounding = await _ground(deps, record, turn.content, first)
    deadline = deps.resilience.deadline(first, time_remaining)
    outcome = StreamOutcome()
    with observe(first.alias, first.provider.name, "chat", turn.tenant_id) as task_record:

        def start(model: ResolvedModel) -> AsyncIterator[Delta]:
            said = [*history, Message(role="user", content=grounding.question)]
            return model.provider.generate(
                GenerateTask(
                    messages=trim_history(deps, model, said),
                    max_tokens=max_tokens(turn.max_tokens, model),
                    temperature=turn.temperature,
                    sources=tuple(grounding.sources),
                    question=turn.content,
                    question_vector=grounding.question_vector,
                )
            )

        if record.collection:
            given = citations(range(1, len(grounding.sources) + 1), grounding.chunks)
            yield llm_pb2.StreamEvent(sources=llm_pb2.SourceList(items=given))
        said = [*(message.content for message in history), grounding.question]
        prompt = Spent.of_prompt(*said)
        async for event in relay(
            deps.resilience, chain, start, deadline, task_record, outcome, prompt
        ):
            yield event
    reply = outcome.text
    if record.collection:
        cited = filter_citations(reply, {source.number for source in grounding.sources})
        yield llm_pb2.StreamEvent(
            citations=llm_pb2.SourceList(items=citations(cited.cited, grounding.chunks))
        )
    # Stored once the reply is complete: a cancelled reply leaves no half message.
    await deps.conversations.append(
        turn.tenant_id,
        turn.user_id,
        record.id,
        [StoredMessage("user", turn.content), StoredMessage("assistant", reply)],
    )
    if outcome.model is not None:
        log_usage("chat", turn.tenant_id, outcome.model, outcome.usage, streamed=True)
    for event in closing_events(outcome, "chat"):
        yield event


async def _ground(
    deps: TaskDeps, record: ConversationRecord, content: str, first: ResolvedModel
) -> Grounding:
    """Sources for ``content`` from the conversation's collection (none without one)."""
    if not record.collection:
        return Grounding(chunks=[], sources=[], question=content)
    found = await search_chunks(deps, record.tenant_id, record.collection, content, DEFAULT_TOP_K)
    chunks = found.chunks
    room = math.floor((first.config.context_window - first.config.max_tokens) * GROUNDING_SHARE)
    sources = pack_sources([chunk.text for chunk in chunks], room)
    if not sources:
        return Grounding(chunks, [], content, found.query_vector)
    question = GROUNDED_MESSAGE.format(sources=render_sources(sources), question=content)
    return Grounding(chunks, sources, question, found.query_vector)


def trim_history(deps: TaskDeps, model: ResolvedModel, messages: list[Message]) -> list[Message]:
    """The newest messages that fit the context next to the reply; the oldest go first."""
    overhead = sum(
        count_tokens(str(message.content)) for message in deps.prompts.chat.render(conversation=[])
    )
    room = model.config.context_window - model.config.max_tokens - overhead
    room = math.floor(room * TEXT_BUDGET_SHARE)
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
