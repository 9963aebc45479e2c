"""Types shared by several request and response models."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from aimesh.llm.v1 import llm_pb2
from aimesh_common.limits import COLLECTION_NAME_PATTERN, COLLECTION_NAME_RULE

CollectionName = Annotated[
    str,
    Field(
        pattern=COLLECTION_NAME_PATTERN,
        description=f"{COLLECTION_NAME_RULE}.",
        examples=["docs"],
    ),
]
ModelAlias = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        description='Model alias configured on the server (see GET /v1/models), e.g. "default".',
        examples=["default"],
    ),
]
TaskModel = Annotated[
    ModelAlias | None,
    Field(
        description="Model alias (see GET /v1/models); unset: the alias the server serves this "
        "task with by default (listed in the alias's default_for).",
        examples=["default"],
    ),
]
MetadataFilter = Annotated[
    dict[str, Any] | None,
    Field(
        description="Metadata filter: {field: value} or operators $eq $ne $in $gt $gte $lt $lte "
        "$and $or.",
        examples=[{"lang": "en"}, {"$and": [{"year": {"$gte": 2020}}, {"tag": {"$in": ["a"]}}]}],
    ),
]


def score(value: float) -> float:
    """A float32 score from the wire, without the float32 noise (0.83, not 0.8299999833)."""
    return round(value, 6)


class StrictModel(BaseModel):
    """Request models of the native API reject unknown fields, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class Usage(BaseModel):
    """Token counts of a model call."""

    prompt_tokens: int = Field(ge=0, examples=[412])
    completion_tokens: int = Field(ge=0, examples=[38])
    total_tokens: int = Field(ge=0, examples=[450])
    estimated: bool = Field(
        False, description="True when the counts are estimates (the provider reported none)."
    )
    cost_usd: float = Field(
        0.0,
        ge=0,
        description="Cost in US dollars from the answering alias's prices (0 when unpriced).",
        examples=[0.0001],
    )

    @classmethod
    def from_proto(cls, usage: llm_pb2.Usage) -> Usage:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            estimated=usage.estimated,
            cost_usd=usage.cost_usd,
        )
