"""Conversations: created, read and continued by their owner (this user of this tenant).

The router keeps them (Redis or SQLite); a conversation of another user or tenant answers
404 like a missing one. Replies are always streamed as typed server-sent events.

The router also owns their metadata (owner, settings, size, last activity, deletion) and
lists it for the tenant's admins: GET /v1/admin/conversations asks its
ListTenantConversations.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import Response, StreamingResponse

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.api.deps import (
    API_PREFIX,
    AdminPrincipal,
    UpstreamDep,
    UsageDep,
    UserPrincipal,
)
from aimesh_gateway.api.task_stream import STREAM_DESCRIPTION, event_stream
from aimesh_gateway.core.errors import OpenAIClientError
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.limits.budgets import FILL_CONTEXT
from aimesh_gateway.limits.http import CANCEL_ON_DISCONNECT_EXTRA
from aimesh_gateway.schemas.conversations import (
    Conversation,
    ConversationList,
    ConversationMessage,
    ConversationRecordItem,
    ConversationRecordList,
    ConversationSummary,
    CreateConversationRequest,
    SendMessageRequest,
)
from aimesh_gateway.schemas.problem import COMMON_ERRORS, NOT_FOUND

router = APIRouter(prefix=API_PREFIX, tags=["conversations"], route_class=CheckedJSONRoute)
# The tenant's admins read the router's metadata (registered in api/main.py).
admin_router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"], route_class=CheckedJSONRoute)


# OpenAI's Conversations API uses this path with another shape. aimesh keeps its native
# route here (its web app, CLI and clients use it) and answers an OpenAI SDK's call with a
# clear 400 instead of a validation error: the SDK's own headers or OpenAI's members tell it.
OPENAI_CONVERSATIONS_REFUSAL = (
    "POST /v1/conversations is aimesh's own conversations API; OpenAI's Conversations API "
    "(client.conversations.*) is not served. With the Responses API, continue a conversation "
    "with previous_response_id (see docs/migrating-from-direct-openai.md)."
)
_OPENAI_SDK_HEADER = "x-stainless-lang"
_OPENAI_CONVERSATION_MEMBERS = frozenset({"items", "metadata"})


async def refuse_openai_conversations(request: Request) -> None:
    """A 400 (with OpenAI's error object) for a call of OpenAI's Conversations API."""
    openai_shaped = _OPENAI_SDK_HEADER in request.headers
    if not openai_shaped:
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, RecursionError):
            return  # the body validation answers malformed JSON
        openai_shaped = isinstance(body, dict) and bool(_OPENAI_CONVERSATION_MEMBERS & set(body))
    if openai_shaped:
        raise OpenAIClientError(400, OPENAI_CONVERSATIONS_REFUSAL)


def _conversation(reply: llm_pb2.Conversation) -> Conversation:
    return Conversation(
        id=reply.id,
        model=reply.model,
        collection=reply.collection or None,
        title=reply.title,
        created_at=reply.created_at,
        messages=[
            ConversationMessage(role="user" if m.role == "user" else "assistant", content=m.content)
            for m in reply.messages
        ],
    )


@router.post(
    "/conversations",
    status_code=status.HTTP_201_CREATED,
    responses={**COMMON_ERRORS, **NOT_FOUND},
    dependencies=[Depends(refuse_openai_conversations)],
    summary="Start a conversation",
    description="aimesh's native conversations. A call of OpenAI's Conversations API on this "
    "path (an OpenAI SDK, or OpenAI's `items`/`metadata` members) is answered with a 400 "
    "saying so.",
)
async def create_conversation(
    body: CreateConversationRequest,
    principal: UserPrincipal,
    upstream: UpstreamDep,
) -> Conversation:
    reply = await upstream.llm_router.CreateConversation(
        llm_pb2.CreateConversationRequest(
            tenant_id=principal.tenant_id,
            user_id=principal.subject,
            model=body.model or "",
            collection=body.collection or "",
            title=body.title,
        ),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    return _conversation(reply)


@router.get("/conversations", responses=COMMON_ERRORS, summary="The caller's conversations")
async def list_conversations(
    principal: UserPrincipal,
    upstream: UpstreamDep,
    limit: Annotated[int, Query(ge=1, le=200, description="Most conversations to return.")] = 50,
) -> ConversationList:
    """The caller's own conversations, newest first, without their messages."""
    reply = await upstream.llm_router.ListConversations(
        llm_pb2.ListConversationsRequest(
            tenant_id=principal.tenant_id, user_id=principal.subject, limit=limit
        ),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    return ConversationList(
        data=[
            ConversationSummary(
                id=item.id,
                model=item.model,
                collection=item.collection or None,
                title=item.title,
                created_at=item.created_at,
                message_count=item.message_count,
            )
            for item in reply.conversations
        ]
    )


@router.delete(
    "/conversations/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Delete a conversation and its messages",
)
async def delete_conversation(
    conversation_id: str,
    principal: UserPrincipal,
    upstream: UpstreamDep,
) -> Response:
    await upstream.llm_router.DeleteConversation(
        llm_pb2.DeleteConversationRequest(
            tenant_id=principal.tenant_id,
            user_id=principal.subject,
            conversation_id=conversation_id,
        ),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/conversations/{conversation_id}",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="A conversation and its messages",
)
async def get_conversation(
    conversation_id: str,
    principal: UserPrincipal,
    upstream: UpstreamDep,
) -> Conversation:
    reply = await upstream.llm_router.GetConversation(
        llm_pb2.GetConversationRequest(
            tenant_id=principal.tenant_id,
            user_id=principal.subject,
            conversation_id=conversation_id,
        ),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    return _conversation(reply)


@router.post(
    "/conversations/{conversation_id}/messages",
    openapi_extra={CANCEL_ON_DISCONNECT_EXTRA: True},
    responses={
        **COMMON_ERRORS,
        **NOT_FOUND,
        200: {"description": STREAM_DESCRIPTION, "content": {"text/event-stream": {}}},
    },
    response_class=StreamingResponse,
    response_model=None,
    summary="Send a message; the reply is streamed",
)
async def send_message(
    conversation_id: str,
    body: SendMessageRequest,
    principal: UserPrincipal,
    upstream: UpstreamDep,
    usage_meter: UsageDep,
    http_request: Request,
) -> StreamingResponse:
    request = llm_pb2.SendMessageRequest(
        tenant_id=principal.tenant_id,
        user_id=principal.subject,
        conversation_id=conversation_id,
        content=body.content,
        max_tokens=body.max_tokens or 0,
    )
    if body.temperature is not None:
        request.temperature = body.temperature
    if await usage_meter.budgeted():
        # The conversation's alias is the router's to know; a budget needs it first. Its
        # history (and a grounded one's sources) may fill the alias's context window.
        conversation = await upstream.llm_router.GetConversation(
            llm_pb2.GetConversationRequest(
                tenant_id=principal.tenant_id,
                user_id=principal.subject,
                conversation_id=conversation_id,
            ),
            timeout=upstream.timeout,
            metadata=upstream.metadata,
        )
        task = "qa" if conversation.collection else "chat"
        await usage_meter.reserve(conversation.model, task, FILL_CONTEXT, request.max_tokens)
    stream = upstream.llm_router.SendMessage(
        request, timeout=upstream.timeout, metadata=upstream.metadata
    )
    return await event_stream(stream, usage_meter, http_request)


@admin_router.get(
    "/conversations",
    responses=COMMON_ERRORS,
    summary="Conversations of the tenant (metadata, no messages)",
)
async def list_tenant_conversations(
    principal: AdminPrincipal,
    upstream: UpstreamDep,
    subject: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=r"^[^\x00]+$",
            description="Only the conversations of this owner (a principal's subject).",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Most conversations to return.")] = 100,
    include_deleted: Annotated[
        bool, Query(description="Also the conversations their owners deleted.")
    ] = False,
) -> ConversationRecordList:
    """The conversations of the admin's tenant as the router keeps them, most recently
    active first: owner, model, collection, title, times and size; never their messages."""
    reply = await upstream.llm_router.ListTenantConversations(
        llm_pb2.ListTenantConversationsRequest(
            tenant_id=principal.tenant_id,
            user_id=subject or "",
            include_deleted=include_deleted,
            limit=limit,
        ),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    return ConversationRecordList(
        data=[ConversationRecordItem.from_proto(item) for item in reply.conversations]
    )
