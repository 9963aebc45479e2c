"""Similarity search in a collection."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from aimesh_common.limits import DEFAULT_TOP_K, MAX_QUERY_CHARS, MAX_SEARCH_TOP_K
from aimesh_gateway.schemas.common import MetadataFilter, StrictModel


class SearchRequest(StrictModel):
    query: str = Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        description="Query text.",
        examples=["What is aimesh?"],
    )
    top_k: int = Field(
        DEFAULT_TOP_K, ge=1, le=MAX_SEARCH_TOP_K, description="Number of chunks to return."
    )
    filter: MetadataFilter = None
    mode: Literal["dense", "bm25", "hybrid"] = Field(
        "dense",
        description="dense (embeddings), bm25 (full text) or hybrid (both, fused). bm25 and "
        "hybrid need Milvus Lite or Milvus >= 2.5 (409 otherwise).",
    )
    fusion: Literal["adaptive", "rrf", "weighted"] | None = Field(
        None,
        description="Hybrid fusion: adaptive (a per-query dense weight, the server default "
        "unless configured otherwise), reciprocal rank, or weighted scores.",
    )
    dense_weight: float | None = Field(
        None, ge=0, le=1, description="Weighted fusion: weight of dense (BM25 gets 1 - it)."
    )
    mmr: bool = Field(False, description="Diversify results by maximal marginal relevance.")
    mmr_lambda: float | None = Field(
        None, ge=0, le=1, description="MMR: 1 ranks by relevance only, 0 by novelty (0.5)."
    )
    rerank: bool | None = Field(
        None,
        description="Rerank the best fused candidates with the configured reranker and return "
        "them in its order, scored by it. null: the collection's default. true without a "
        "reranker configured: 409; together with mmr: 400.",
    )


class SearchResult(BaseModel):
    document_id: str = Field(examples=["about"])
    chunk_id: str = Field(description='"<document_id>#<index>"', examples=["about#0"])
    chunk_index: int = Field(ge=0, examples=[0])
    text: str = Field(examples=["aimesh is an open AI backend."])
    score: float = Field(
        description="Cosine similarity (dense), BM25 score (bm25), fused score (hybrid) or the "
        "reranker's score (rerank); higher is better.",
        examples=[0.83],
    )
    metadata: dict[str, Any] = Field(default_factory=dict, examples=[{"lang": "en"}])
    title: str = Field(
        "",
        description="The document's title (metadata title), in collections with chunk context.",
        examples=["Install guide"],
    )
    section: str = Field(
        "",
        description='The headings above the chunk, outermost first, joined by " > " (chunk '
        "context; empty before the first heading or in text without headings).",
        examples=["Linux > Packages"],
    )


class SearchResponse(BaseModel):
    results: list[SearchResult] = Field(description="Best chunks first.")
