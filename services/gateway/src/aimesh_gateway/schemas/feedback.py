"""Feedback on answers (a thumbs up or down per request) and its summaries for admins."""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import Literal

from pydantic import BaseModel, Field

from aimesh_common.request_id import REQUEST_ID_PATTERN
from aimesh_gateway.schemas.common import StrictModel

MAX_COMMENT_CHARS = 2000
# REQUEST_ID_PATTERN is what the gateway accepts as X-Request-ID (observability/middleware.py), so
# any id it echoed fits.
Rating = Literal[1, -1]


class RatingFilter(IntEnum):
    """A rating as a query parameter (a Literal would not accept the text "-1")."""

    UP = 1
    DOWN = -1


class FeedbackCreate(StrictModel):
    request_id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="The X-Request-ID of the answer (/v1/ask, /v1/summarize, "
        "/v1/chat/completions or a conversation message), or the `request_id` of a stream's "
        "`done` event.",
        examples=["6f1c2e0b9a7d4c1e8f3a2b5c4d6e7f80"],
    )
    rating: Rating = Field(description="1 (helpful) or -1 (not helpful).", examples=[1])
    comment: str | None = Field(
        None, max_length=MAX_COMMENT_CHARS, examples=["Cited the wrong section."]
    )


class FeedbackItem(BaseModel):
    id: str = Field(examples=["0b9a7d4c1e8f3a2b5c4d6e7f806f1c2e"])
    request_id: str
    rating: Rating
    comment: str | None
    route: str = Field(description="Route that answered.", examples=["/v1/ask"])
    model: str = Field(description="Alias that answered.", examples=["default"])
    provider: str = Field(description="Provider kind that answered.", examples=["local"])
    prompt_version: str = Field(description="Prompt template used.", examples=["qa/v1"])
    created_at: datetime


class FeedbackAdminItem(FeedbackItem):
    subject: str = Field(description="Who rated (API key id or user).")


class FeedbackList(BaseModel):
    data: list[FeedbackAdminItem] = Field(description="Newest first.")


class FeedbackSummaryRow(BaseModel):
    route: str
    model: str
    provider: str
    prompt_version: str
    count: int = Field(ge=0)
    up: int = Field(ge=0)
    down: int = Field(ge=0)
    score: float = Field(ge=-1, le=1, description="(up - down) / count.")


class FeedbackSummary(BaseModel):
    data: list[FeedbackSummaryRow] = Field(description="Most rated first.")
