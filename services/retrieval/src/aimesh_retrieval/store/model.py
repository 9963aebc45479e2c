"""The store's data model: how collections are named and described, what is stored and
what a search returns."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import grpc

from aimesh_common.errors import AimeshError, NotFound
from aimesh_retrieval.chunking import ChunkingConfig

SearchMode = Literal["dense", "bm25", "hybrid"]
FusionKind = Literal["adaptive", "rrf", "weighted"]
# Written into collection descriptions; collections without it predate the settings.
SETTINGS_VERSION = 1


class AlreadyExists(AimeshError):
    """The tenant already has a collection of that name."""

    code = grpc.StatusCode.ALREADY_EXISTS


def tenant_prefix(tenant_id: str) -> str:
    """The common start of the physical names of all of a tenant's collections."""
    return f"a_{hashlib.sha256(tenant_id.encode()).hexdigest()[:16]}_"


def physical_name(tenant_id: str, collection: str) -> str:
    """The Milvus collection of ``collection`` owned by ``tenant_id``.

    ``a_<sha256(tenant)[:16]>_<sha256(collection)[:16]>``: a valid Milvus name for any
    input, deterministic across replicas, and collision-free in practice (64 bits each).
    """
    name = hashlib.sha256(collection.encode()).hexdigest()[:16]
    return f"{tenant_prefix(tenant_id)}{name}"


def chunk_id(document_id: str, index: int) -> str:
    """The stable id of a chunk, ``<document_id>#<index>``."""
    return f"{document_id}#{index}"


@dataclass(frozen=True)
class CollectionRef:
    """A collection as the caller names it, plus the tenant that owns it."""

    tenant_id: str
    name: str

    @property
    def physical(self) -> str:
        return physical_name(self.tenant_id, self.name)

    def not_found(self) -> NotFound:
        # Names only what the caller sent: nothing about other tenants or physical names.
        return NotFound(f"collection '{self.name}' not found")


@dataclass(frozen=True)
class IndexConfig:
    """The dense vector index: FLAT (exact) or HNSW with its build parameters."""

    index_type: Literal["FLAT", "HNSW"] = "FLAT"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200


@dataclass(frozen=True)
class FusionDefault:
    """A collection's default hybrid fusion (``dense_weight`` for weighted fusion; None:
    the service default weight)."""

    fusion: FusionKind
    dense_weight: float | None = None


@dataclass(frozen=True)
class CollectionMeta:
    """What is known of an existing collection."""

    name: str
    dimension: int
    chunking: ChunkingConfig | None
    index: IndexConfig
    full_text: bool
    # Searches rerank unless they say otherwise.
    rerank: bool = False
    fusion: FusionDefault | None = None

    @property
    def context(self) -> bool:
        """Whether the collection's chunks carry title and section (the schema has them)."""
        return self.chunking is not None and self.chunking.context

    def describe(self, tenant_id: str) -> str:
        return json.dumps(
            {
                "aimesh": SETTINGS_VERSION,
                "tenant": tenant_id,
                "name": self.name,
                "chunking": asdict(self.chunking) if self.chunking else None,
                "index": asdict(self.index),
                "full_text": self.full_text,
                "rerank": self.rerank,
                "fusion": asdict(self.fusion) if self.fusion else None,
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class SearchOptions:
    """How one search runs. ``dense_weight`` applies to weighted fusion only."""

    mode: SearchMode = "dense"
    fusion: FusionKind = "rrf"
    dense_weight: float = 0.5
    mmr: bool = False
    mmr_lambda: float = 0.5


@dataclass(frozen=True)
class RowContext:
    """The context columns of a chunk row in a collection with chunk context: the title,
    the section path, and the header (``title > section``) put before the chunk's text in
    the stored ``text`` (which BM25 indexes) as ``header + "\n\n"``."""

    title: str
    section: str
    header: str

    @property
    def prefix(self) -> str:
        return f"{self.header}\n\n" if self.header else ""


@dataclass(frozen=True)
class ChunkRow:
    """One stored chunk. ``chunk_count`` and ``content_hash`` repeat the document's.
    ``context`` is set exactly in collections with chunk context."""

    document_id: str
    chunk_index: int
    chunk_count: int
    text: str
    content_hash: str
    metadata: Mapping[str, Any]
    embedding: Sequence[float]
    context: RowContext | None = None

    def to_entity(self) -> dict[str, Any]:
        entity = {
            "id": chunk_id(self.document_id, self.chunk_index),
            "document_id": self.document_id,
            "chunk_index": self.chunk_index,
            "chunk_count": self.chunk_count,
            "text": self.text,
            "content_hash": self.content_hash,
            "metadata": dict(self.metadata),
            "embedding": list(self.embedding),
        }
        if self.context is not None:
            prefix = self.context.prefix
            entity["text"] = prefix + self.text
            entity["body_start"] = len(prefix)
            entity["title"] = self.context.title
            entity["section"] = self.context.section
        return entity


@dataclass(frozen=True)
class StoredDocument:
    """What chunk 0 of a stored document says about it."""

    document_id: str
    chunks: int
    content_hash: str
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class Hit:
    """A chunk found by a search, with its cosine similarity to the query."""

    document_id: str
    chunk_id: str
    chunk_index: int
    text: str
    score: float
    metadata: Mapping[str, Any]
    # The chunk's document title and heading path (empty without chunk context).
    title: str = ""
    section: str = ""
