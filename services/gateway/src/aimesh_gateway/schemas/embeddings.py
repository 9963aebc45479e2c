"""The OpenAI embeddings shape (``POST /v1/embeddings``).

Unknown top-level fields are refused with a 400 as OpenAI does, except ``user`` (accepted
and ignored). Token-array
inputs (lists of integers, as LangChain's ``OpenAIEmbeddings`` sends by default) are OpenAI's
``cl100k_base`` token ids: the gateway decodes them to text, which the served model then
tokenizes with its own tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aimesh_gateway.schemas.chat import openai_request_schema, refused_parameters
from aimesh_gateway.schemas.common import RequestModel

IGNORED_EMBEDDING_PARAMETERS = frozenset({"user"})


class EmbeddingRequest(RequestModel):
    model_config = ConfigDict(
        extra="allow",  # the route refuses what is not a field or ``user`` (400)
        json_schema_extra=openai_request_schema(
            {"model": "all-MiniLM-L6-v2", "input": ["first text", "second text"]},
            IGNORED_EMBEDDING_PARAMETERS,
        ),
    )

    model: str = Field(
        min_length=1,
        max_length=200,
        description="The embedding model's name as listed by GET /v1/models.",
        examples=["all-MiniLM-L6-v2"],
    )
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description=(
            "One text, or a list of texts (one vector each, in order); or one or more arrays "
            "of cl100k_base token ids, decoded to text."
        ),
        min_length=1,
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float",
        description="float: arrays of numbers; base64: base64 of little-endian float32 bytes.",
    )
    dimensions: int | None = Field(
        None,
        ge=1,
        le=65_536,
        description="Shorten each vector to this many dimensions (re-normalized).",
    )
    truncate: bool = Field(
        False,
        description=(
            "aimesh extension: cut inputs longer than the model's maximum instead of answering 400."
        ),
    )

    def refused(self) -> str | None:
        """The 400 detail for top-level parameters this route does not take, if any."""
        return refused_parameters(self.model_extra, IGNORED_EMBEDDING_PARAMETERS)

    def texts(self, decode: Callable[[list[int]], str]) -> list[str]:
        """The input texts; token-id arrays turned into text by ``decode``."""
        if isinstance(self.input, str):
            return [self.input]
        items: list[Any] = list(self.input)
        if all(isinstance(item, str) for item in items):
            return items
        if all(isinstance(item, int) for item in items):
            return [decode(items)]
        return [decode(ids) for ids in items]


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int = Field(ge=0, description="Position of the input this vector belongs to.")
    embedding: list[float] | str = Field(
        description="The L2-normalized vector, or its base64 float32 bytes."
    )


class EmbeddingUsage(BaseModel):
    prompt_tokens: int = Field(ge=0, description="Model tokens of all inputs (after truncation).")
    total_tokens: int = Field(ge=0)


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage
