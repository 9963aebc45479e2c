"""Summarization."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from aimesh_gateway.schemas.common import StrictModel, TaskModel, Usage


class SummarizeRequest(StrictModel):
    text: str = Field(min_length=1, description="Text to summarize.")
    style: Literal["brief", "bullets", "detailed"] = "brief"
    max_words: int | None = Field(
        None, ge=1, le=10_000, description="Approximate upper bound; unset uses the style's."
    )
    model: TaskModel = None
    stream: bool = Field(False, description="Stream typed server-sent events.")


class SummarizeResponse(BaseModel):
    summary: str
    model: str = Field(description="Alias that served the request.", examples=["default"])
    usage: Usage
    provider: str = Field(
        "",
        description='Provider kind that answered, after any fallback (e.g. "local", "openai").',
        examples=["local"],
    )
    prompt_version: str = Field(
        "",
        description='Prompt template used ("<task>/v<n>"); empty when none.',
        examples=["summarize/v1"],
    )
