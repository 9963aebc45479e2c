"""Milvus access: one physical collection per (tenant, collection), chunk rows, search.

Tenants are isolated by storage: every (tenant, collection) pair has its own Milvus
collection whose name is derived from hashes of both parts, so no query ever needs a
tenant filter and no filter mistake can leak another tenant's rows.

The synchronous ``MilvusClient`` runs in a small dedicated thread pool: the async client
is incomplete on Milvus Lite (``create_collection`` answers UNIMPLEMENTED there).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from pymilvus import DataType, MilvusClient
from pymilvus.client.types import Status
from pymilvus.exceptions import MilvusException, MilvusUnavailableException

from aimesh_common.errors import NotFound, Unavailable
from aimesh_retrieval.config import Settings
from aimesh_retrieval.filters import quote

log = logging.getLogger("aimesh.retrieval.store")

T = TypeVar("T")

# VARCHAR lengths: Milvus Lite counts characters, a Milvus server may count UTF-8 bytes;
# these fit a 256-character id of four-byte characters either way.
MAX_DOCUMENT_ID_BYTES = 1024
MAX_CHUNK_ID_BYTES = MAX_DOCUMENT_ID_BYTES + 24
MAX_TEXT_BYTES = 65_535
WRITE_BATCH_ROWS = 256
# Stale-chunk deletes combine this many documents in one expression.
DELETE_BATCH_DOCUMENTS = 50
# Milvus failures that mean "cannot reach Milvus": gRPC codes after pymilvus' own retries,
# and the code pymilvus raises when it cannot (re)connect.
_UNAVAILABLE_CODES: tuple[object, ...] = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    Status.CONNECT_FAILED,
)


def physical_name(tenant_id: str, collection: str) -> str:
    """The Milvus collection of ``collection`` owned by ``tenant_id``.

    ``a_<sha256(tenant)[:16]>_<sha256(collection)[:16]>``: a valid Milvus name for any
    input, deterministic across replicas, and collision-free in practice (64 bits each).
    """
    tenant = hashlib.sha256(tenant_id.encode()).hexdigest()[:16]
    name = hashlib.sha256(collection.encode()).hexdigest()[:16]
    return f"a_{tenant}_{name}"


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
class ChunkRow:
    """One stored chunk. ``chunk_count`` and ``content_hash`` repeat the document's."""

    document_id: str
    chunk_index: int
    chunk_count: int
    text: str
    content_hash: str
    metadata: Mapping[str, Any]
    embedding: Sequence[float]

    def to_entity(self) -> dict[str, Any]:
        return {
            "id": chunk_id(self.document_id, self.chunk_index),
            "document_id": self.document_id,
            "chunk_index": self.chunk_index,
            "chunk_count": self.chunk_count,
            "text": self.text,
            "content_hash": self.content_hash,
            "metadata": dict(self.metadata),
            "embedding": list(self.embedding),
        }


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


class MilvusStore:
    """Chunk storage and vector search on Milvus Lite (a local file) or a Milvus server."""

    def __init__(
        self, client: MilvusClient, *, server: bool, workers: int = 4, timeout: float = 30.0
    ) -> None:
        self._client = client
        self._server = server
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="milvus")
        # Physical name -> vector dimension of collections known to exist and be loaded
        # in this process. Collections are never dropped by the service, so a positive
        # entry stays true.
        self._ready: dict[str, int] = {}

    @classmethod
    def open(cls, settings: Settings) -> MilvusStore:
        """Connect to the configured Milvus (starting Milvus Lite for a file URI)."""
        if not settings.milvus_is_server:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        token = settings.milvus_token.get_secret_value() if settings.milvus_token else ""
        client = MilvusClient(
            uri=settings.resolved_milvus_uri, token=token, timeout=settings.milvus_timeout_seconds
        )
        return cls(
            client,
            server=settings.milvus_is_server,
            workers=settings.milvus_workers,
            timeout=settings.milvus_timeout_seconds,
        )

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one client call in the pool; connection failures become UNAVAILABLE."""
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, timeout=self._timeout, **kwargs)
        try:
            return await loop.run_in_executor(self._pool, call)
        except MilvusException as error:
            if isinstance(error, MilvusUnavailableException) or error.code in _UNAVAILABLE_CODES:
                log.warning("milvus unavailable: %s", error.message)
                raise Unavailable("vector store unavailable") from error
            raise

    # Collections

    async def dimension(self, ref: CollectionRef) -> int | None:
        """The vector dimension of an existing collection (loading it), or None."""
        name = ref.physical
        if name in self._ready:
            return self._ready[name]
        if not await self._run(self._client.has_collection, name):
            return None
        description = await self._run(self._client.describe_collection, name)
        dim = _vector_dimension(description)
        # Collections are released after a restart; searching needs them loaded.
        await self._run(self._client.load_collection, name)
        self._ready[name] = dim
        return dim

    async def require(self, ref: CollectionRef) -> int:
        """The dimension of an existing collection; NOT_FOUND when it does not exist."""
        dim = await self.dimension(ref)
        if dim is None:
            raise ref.not_found()
        return dim

    async def create(self, ref: CollectionRef, dim: int) -> None:
        """Create (if missing) and load the collection with ``dim``-dimensional vectors."""
        name = ref.physical
        if await self.dimension(ref) is not None:
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_CHUNK_ID_BYTES)
        schema.add_field("document_id", DataType.VARCHAR, max_length=MAX_DOCUMENT_ID_BYTES)
        schema.add_field("chunk_index", DataType.INT64)
        schema.add_field("chunk_count", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        index = self._client.prepare_index_params()
        if self._server:
            index.add_index(
                field_name="embedding",
                index_type="HNSW",
                metric_type="COSINE",
                params={"M": 16, "efConstruction": 200},
            )
        else:
            index.add_index(field_name="embedding", index_type="FLAT", metric_type="COSINE")
        await self._run(
            self._client.create_collection,
            name,
            schema=schema,
            index_params=index,
            # Reads must see the preceding writes: the content-hash check and the
            # stale-chunk cleanup depend on it.
            consistency_level="Strong",
        )
        # Load right away: the first search on a growing segment is slow otherwise.
        await self._run(self._client.load_collection, name)
        self._ready[name] = dim
        log.info("created collection", extra={"collection": name, "dimension": dim})

    # Documents

    async def stored_documents(
        self, ref: CollectionRef, document_ids: Iterable[str]
    ) -> dict[str, StoredDocument]:
        """The stored documents among ``document_ids`` (read from their chunk 0)."""
        ids = list(dict.fromkeys(document_ids))
        if not ids:
            return {}
        expr = f"chunk_index == 0 and document_id in [{', '.join(quote(i) for i in ids)}]"
        rows = await self._run(
            self._client.query,
            ref.physical,
            filter=expr,
            output_fields=["document_id", "chunk_count", "content_hash", "metadata"],
            limit=len(ids),
        )
        return {row["document_id"]: _stored(row) for row in rows}

    async def write(self, ref: CollectionRef, rows: Sequence[ChunkRow]) -> None:
        """Store the complete new chunk sets of some documents, replacing their old chunks.

        Order matters for crash safety: chunks 1..n-1 first, then the removal of chunks the
        new version no longer has, and chunk 0 last. Chunk 0 carries the content hash, so
        an interrupted write leaves the old hash (or none) behind and the next upsert of the
        same content redoes the whole document instead of skipping it.
        """
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.document_id] = row.chunk_count
        later = [row.to_entity() for row in rows if row.chunk_index > 0]
        first = [row.to_entity() for row in rows if row.chunk_index == 0]
        await self._upsert(ref, later)
        documents = list(counts.items())
        for start in range(0, len(documents), DELETE_BATCH_DOCUMENTS):
            part = documents[start : start + DELETE_BATCH_DOCUMENTS]
            expr = " or ".join(
                f"(document_id == {quote(doc)} and chunk_index >= {count})" for doc, count in part
            )
            await self._run(self._client.delete, ref.physical, filter=expr)
        await self._upsert(ref, first)

    async def _upsert(self, ref: CollectionRef, entities: list[dict[str, Any]]) -> None:
        for start in range(0, len(entities), WRITE_BATCH_ROWS):
            await self._run(
                self._client.upsert, ref.physical, entities[start : start + WRITE_BATCH_ROWS]
            )

    async def count_chunks(self, ref: CollectionRef, document_id: str) -> int:
        """How many chunk rows ``document_id`` has (all of them, not chunk 0's count)."""
        rows = await self._run(
            self._client.query,
            ref.physical,
            filter=f"document_id == {quote(document_id)}",
            output_fields=["count(*)"],
        )
        return int(rows[0]["count(*)"]) if rows else 0

    async def delete_document(self, ref: CollectionRef, document_id: str) -> int:
        """Remove every chunk of ``document_id``; returns how many there were."""
        count = await self.count_chunks(ref, document_id)
        if count:
            await self._run(
                self._client.delete, ref.physical, filter=f"document_id == {quote(document_id)}"
            )
        return count

    async def list_documents(self, ref: CollectionRef, limit: int) -> list[StoredDocument]:
        """Up to ``limit`` documents, sorted by id."""
        rows = await self._run(
            self._client.query,
            ref.physical,
            filter="chunk_index == 0",
            output_fields=["document_id", "chunk_count", "content_hash", "metadata"],
            limit=limit,
        )
        return sorted((_stored(row) for row in rows), key=lambda doc: doc.document_id)

    async def search(
        self, ref: CollectionRef, vector: Sequence[float], top_k: int, expr: str
    ) -> list[Hit]:
        """The ``top_k`` chunks most similar to ``vector`` that match ``expr``, best first."""
        params: dict[str, Any] = {"metric_type": "COSINE"}
        if self._server:
            params["params"] = {"ef": max(64, top_k)}
        results = await self._run(
            self._client.search,
            ref.physical,
            data=[list(vector)],
            filter=expr,
            limit=top_k,
            output_fields=["document_id", "chunk_index", "text", "metadata"],
            search_params=params,
            anns_field="embedding",
        )
        hits: list[Hit] = []
        for result in results[0] if results else []:
            entity = result["entity"]
            hits.append(
                Hit(
                    document_id=entity["document_id"],
                    chunk_id=str(result["id"]),
                    chunk_index=int(entity["chunk_index"]),
                    text=entity["text"],
                    score=float(result["distance"]),
                    metadata=entity.get("metadata") or {},
                )
            )
        return hits

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._client.close)
        self._pool.shutdown(wait=True)


def _stored(row: Mapping[str, Any]) -> StoredDocument:
    return StoredDocument(
        document_id=row["document_id"],
        chunks=int(row["chunk_count"]),
        content_hash=row["content_hash"],
        metadata=row.get("metadata") or {},
    )


def _vector_dimension(description: Mapping[str, Any]) -> int:
    for field in description.get("fields", []):
        if field.get("name") == "embedding":
            return int(field.get("params", {}).get("dim", 0))
    raise RuntimeError("collection has no embedding field")
