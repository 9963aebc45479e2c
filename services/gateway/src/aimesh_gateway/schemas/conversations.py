"""Conversations kept server-side by the LLM router."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from aimesh.llm.v1 import llm_pb2
from aimesh_common.limits import COLLECTION_NAME_PATTERN
from aimesh_gateway.schemas.common import StrictModel, TaskModel


class CreateConversationRequest(StrictModel):
    model: TaskModel = None
    collection: str | None = Field(
        None,
        pattern=COLLECTION_NAME_PATTERN,
        description="Collection of your tenant that grounds the replies (optional).",
    )
    title: str = Field("", max_length=200, examples=["Onboarding questions"])


class ConversationMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class Conversation(BaseModel):
    id: str = Field(examples=["5f0c3e9a2b6d4f1e8a7c9d0b1e2f3a4b"])
    model: str = Field(description="Alias used for replies.", examples=["default"])
    collection: str | None = Field(description="Collection grounding the replies, if any.")
    title: str
    created_at: float = Field(description="Creation time, Unix seconds.")
    messages: list[ConversationMessage]


class ConversationSummary(BaseModel):
    """A conversation in a listing: its settings and size, not its messages."""

    id: str = Field(examples=["5f0c3e9a2b6d4f1e8a7c9d0b1e2f3a4b"])
    model: str = Field(description="Alias used for replies.", examples=["default"])
    collection: str | None = Field(description="Collection grounding the replies, if any.")
    title: str
    created_at: float = Field(description="Creation time, Unix seconds.")
    message_count: int = Field(description="Messages so far (user and assistant).")


class ConversationList(BaseModel):
    data: list[ConversationSummary] = Field(description="Newest first.")


class SendMessageRequest(StrictModel):
    content: str = Field(min_length=1, max_length=32_768, examples=["What changed in v2?"])
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)


class ConversationRecordItem(BaseModel):
    """A conversation of the tenant as the router keeps it: metadata, never messages."""

    id: str = Field(examples=["5f0c3e9a2b6d4f1e8a7c9d0b1e2f3a4b"])
    subject: str = Field(
        description="Owner: the subject of the credential that started it (`key:<id>` for "
        "an API key, the token's `sub` for a JWT).",
        examples=["key:0123456789abcdef0123456789abcdef"],
    )
    model: str = Field(description="Alias used for replies.", examples=["default"])
    collection: str | None = Field(description="Collection grounding the replies, if any.")
    title: str
    created_at: datetime
    updated_at: datetime = Field(description="Last activity: the creation or the last turn.")
    message_count: int = Field(description="Messages so far (user and assistant).")
    deleted_at: datetime | None = Field(description="When its owner deleted it, if so.")

    @classmethod
    def from_proto(cls, conversation: llm_pb2.Conversation) -> ConversationRecordItem:
        return cls(
            id=conversation.id,
            subject=conversation.user_id,
            model=conversation.model,
            collection=conversation.collection or None,
            title=conversation.title,
            created_at=_utc(conversation.created_at),
            updated_at=_utc(conversation.updated_at),
            message_count=conversation.message_count,
            deleted_at=_utc(conversation.deleted_at) if conversation.deleted_at else None,
        )


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class ConversationRecordList(BaseModel):
    data: list[ConversationRecordItem] = Field(description="Most recently active first.")
