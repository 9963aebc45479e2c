"""The OpenAI-compatible model list."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelCard(BaseModel):
    id: str = Field(description="Model alias.", examples=["default"])
    object: Literal["model"] = "model"
    created: int = Field(0, description="Always 0: aliases have no creation time.")
    owned_by: str = "aimesh"
    description: str = ""
    context_window: int = Field(0, ge=0, description="Context window in tokens.")
    default_for: list[str] = Field(
        default_factory=list,
        description='Tasks this alias serves when a request names no model: "chat" (chat '
        'completions, conversations without a collection), "summarize", "qa" (ask, '
        "grounded conversations).",
        examples=[["chat"]],
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
