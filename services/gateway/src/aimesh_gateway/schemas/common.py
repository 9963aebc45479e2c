"""Types shared by several request and response models."""

from __future__ import annotations

import functools
import types
import typing
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from aimesh.llm.v1 import llm_pb2
from aimesh_common.jsonlimits import MAX_EXACT_INT, MAX_STRUCT_DEPTH, check_json
from aimesh_common.limits import COLLECTION_NAME_PATTERN, COLLECTION_NAME_RULE


def _free_form(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A JSON object sent on as a ``google.protobuf.Struct``: no deeper than the services
    accept, integers exact in a double (the Struct's number type)."""
    if value is not None:
        check_json(value, "value", max_depth=MAX_STRUCT_DEPTH, max_int=MAX_EXACT_INT)
    return value


FreeFormObject = Annotated[dict[str, Any], AfterValidator(_free_form)]
"""Free-form JSON kept as a Struct (metadata): at most :data:`MAX_STRUCT_DEPTH` levels of
objects and arrays, integers within +-2**53 (422 otherwise)."""

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
    AfterValidator(_free_form),
    Field(
        description="Metadata filter: {field: value} or operators $eq $ne $in $gt $gte $lt $lte "
        "$and $or.",
        examples=[{"lang": "en"}, {"$and": [{"year": {"$gte": 2020}}, {"tag": {"$in": ["a"]}}]}],
    ),
]


def score(value: float) -> float:
    """A float32 score from the wire, without the float32 noise (0.83, not 0.8299999833)."""
    return round(value, 6)


def _number_types(annotation: Any) -> tuple[bool, bool]:
    """Whether ``annotation`` takes a number (int or float, not bool), and whether it takes
    a list of them, looking through ``Optional``, unions and ``Annotated``."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _number_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        found = [_number_types(arg) for arg in typing.get_args(annotation)]
        return any(scalar for scalar, _ in found), any(listed for _, listed in found)
    if origin is list:
        args = typing.get_args(annotation)
        return False, bool(args) and _number_types(args[0])[0]
    return annotation in (int, float), False


@functools.cache
def _number_fields(model: type[BaseModel]) -> list[tuple[str, str, bool, bool]]:
    """(name, JSON key, takes a number, takes a list of numbers) of ``model``'s number fields."""
    fields = []
    for name, field in model.model_fields.items():
        scalar, listed = _number_types(field.annotation)
        if scalar or listed:
            fields.append((name, field.alias or name, scalar, listed))
    return fields


class RequestModel(BaseModel):
    """Base of request models: a JSON ``true`` is not the number 1. (Pydantic's lax mode
    would take it as 1 for an int or float field; strict mode would also refuse the ISO
    dates and enum strings JSON carries, so only booleans are singled out.)"""

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, key, scalar, listed in _number_fields(cls):
                value = data.get(key)
                if scalar and isinstance(value, bool):
                    raise ValueError(f"{name} must be a number, not a boolean")
                if listed and isinstance(value, list) and any(isinstance(v, bool) for v in value):
                    raise ValueError(f"{name} must hold numbers, not booleans")
        return data


class StrictModel(RequestModel):
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
