"""Question answering over a collection, with citations."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from aimesh.llm.v1 import llm_pb2
from aimesh_common.limits import DEFAULT_TOP_K, MAX_ASK_TOP_K, MAX_QUERY_CHARS
from aimesh_common.structs import from_struct
from aimesh_gateway.schemas.common import (
    CollectionName,
    MetadataFilter,
    StrictModel,
    TaskModel,
    Usage,
    score,
)


class AskRequest(StrictModel):
    question: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, examples=["What is aimesh?"])
    collection: CollectionName
    top_k: int = Field(
        DEFAULT_TOP_K, ge=1, le=MAX_ASK_TOP_K, description="Chunks to retrieve as sources."
    )
    model: TaskModel = None
    filter: MetadataFilter = None
    rerank: bool | None = Field(
        None,
        description="Rerank the retrieved sources (as in search). null: the collection's "
        "default. true without a reranker configured: 409.",
    )
    stream: bool = Field(False, description="Stream typed server-sent events.")


class Citation(BaseModel):
    source: int = Field(ge=1, description='The number the answer uses ("[1]").', examples=[1])
    document_id: str = Field(examples=["about"])
    chunk_id: str = Field(examples=["about#0"])
    text: str = Field(examples=["aimesh is an open AI backend."])
    score: float = Field(examples=[0.83])
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_proto(cls, citation: llm_pb2.Citation) -> Citation:
        return cls(
            source=citation.source,
            document_id=citation.document_id,
            chunk_id=citation.chunk_id,
            text=citation.text,
            score=score(citation.score),
            metadata=from_struct(citation.metadata),
        )


class AskResponse(BaseModel):
    answer: str = Field(examples=["aimesh is an open AI backend [1]."])
    citations: list[Citation] = Field(description="Cited sources, in source-number order.")
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
        examples=["qa/v1"],
    )
    fallback_reason: str = Field(
        "",
        description='"invalid_citations" when the requested model\'s answer cited no source or '
        "one never given and the extractive answer replaced it (model and provider then name "
        "the extractive alias); empty otherwise.",
        examples=[""],
    )
    replaced_model: str = Field(
        "", description="The alias whose answer was replaced (with fallback_reason)."
    )
