"""Similarity search in a collection."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from aimesh_gateway.schemas.common import MetadataFilter, StrictModel


class SearchRequest(StrictModel):
    query: str = Field(
        min_length=1, max_length=8192, description="Query text.", examples=["What is aimesh?"]
    )
    top_k: int = Field(5, ge=1, le=100, description="Number of chunks to return.")
    filter: MetadataFilter = None


class SearchResult(BaseModel):
    document_id: str = Field(examples=["about"])
    chunk_id: str = Field(description='"<document_id>#<index>"', examples=["about#0"])
    chunk_index: int = Field(ge=0, examples=[0])
    text: str = Field(examples=["aimesh is an open AI backend."])
    score: float = Field(description="Cosine similarity (higher is better).", examples=[0.83])
    metadata: dict[str, Any] = Field(default_factory=dict, examples=[{"lang": "en"}])


class SearchResponse(BaseModel):
    results: list[SearchResult] = Field(description="Best chunks first.")
