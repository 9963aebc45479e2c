"""Collections: create (with chunking and index settings), list, delete."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, Field, model_validator

from aimesh_gateway.schemas.common import CollectionName, StrictModel

MAX_CHUNK_TOKENS = 254
"""The longest chunk a collection takes: the embedding model's window (all-MiniLM-L6-v2:
256 tokens) less its two special tokens; the retrieval service checks the same bound."""


class ChunkingSettings(StrictModel):
    chunk_size: int = Field(
        200,
        ge=1,
        le=MAX_CHUNK_TOKENS,
        description="Longest chunk in tokens of the embedding model (all-MiniLM-L6-v2 sees 256 "
        "including two special tokens).",
    )
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by neighbouring chunks.")
    markdown: bool = Field(
        False, description="Prefer markdown headings, code fences and rules as chunk boundaries."
    )
    context: bool | None = Field(
        None,
        description="Each chunk carries its document's title and heading path into its "
        "embedding and BM25 text, and search results return them as title and section. "
        "Unset: the service default (on).",
    )


class IndexSettings(StrictModel):
    index_type: Literal["FLAT", "HNSW"] | None = Field(
        None,
        description="Vector index; default FLAT on Milvus Lite (which has only FLAT), HNSW on a "
        "Milvus server.",
    )
    hnsw_m: int | None = Field(None, ge=4, le=64, description="HNSW graph degree M (default 16).")
    hnsw_ef_construction: int | None = Field(
        None, ge=8, le=512, description="HNSW efConstruction (default 200)."
    )


class FusionSettings(StrictModel):
    fusion: Literal["adaptive", "rrf", "weighted"] = Field(
        description="Hybrid fusion searches of this collection use when they name none."
    )
    dense_weight: float | None = Field(
        None, ge=0, le=1, description="Weighted fusion only: the dense weight (BM25: 1 - it)."
    )

    @model_validator(mode="after")
    def _weight_for_weighted_only(self) -> Self:
        if self.dense_weight is not None and self.fusion != "weighted":
            raise ValueError("dense_weight applies to weighted fusion only")
        return self


class UpdateCollectionRequest(StrictModel):
    fusion: FusionSettings | None = Field(
        description="The collection's default hybrid fusion (`aimesh eval --fit` measures "
        "one on labelled queries); null: back to the service default."
    )


class CreateCollectionRequest(StrictModel):
    name: CollectionName
    chunking: ChunkingSettings | None = Field(None, description="Defaults when absent.")
    index: IndexSettings | None = Field(None, description="Backend defaults when absent.")
    rerank: bool = Field(
        False,
        description="Rerank searches and asks of this collection unless they say otherwise "
        "(409 when no reranker is configured).",
    )


class CollectionInfo(BaseModel):
    name: str = Field(examples=["docs"])
    chunking: ChunkingSettings
    index_type: str = Field(examples=["FLAT"])
    hnsw_m: int | None = Field(None, examples=[None])
    hnsw_ef_construction: int | None = Field(None, examples=[None])
    full_text: bool = Field(
        description="True when BM25 and hybrid search are available for this collection."
    )
    dimension: int = Field(description="Vector dimension.", examples=[384])
    rerank: bool = Field(False, description="Searches rerank by default.")
    fusion: FusionSettings | None = Field(
        None, description="The collection's default hybrid fusion; null: the service default."
    )


class CollectionList(BaseModel):
    collections: list[CollectionInfo] = Field(description="Sorted by name.")
