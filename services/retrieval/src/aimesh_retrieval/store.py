"""Milvus access: one physical collection per (tenant, collection), chunk rows, search.

Tenants are isolated by storage: every (tenant, collection) pair has its own Milvus
collection whose name is derived from hashes of both parts, so no query ever needs a
tenant filter and no filter mistake can leak another tenant's rows.

The synchronous ``MilvusClient`` runs in a small dedicated thread pool: the async client
is incomplete on Milvus Lite (``create_collection`` answers UNIMPLEMENTED there).

Each collection's settings (owner, caller-facing name, chunking, index, full text) are
kept as JSON in a property of the Milvus collection (``aimesh.settings``; Milvus Lite
drops schema descriptions), so they live and die with the data
and every replica reads the same. Full-text (BM25) search needs Milvus Lite or a Milvus
server >= 2.5: there the text field gets an analyzer and a BM25 function fills a sparse
vector field. Hybrid search passes the filter in EACH ``AnnSearchRequest``: a top-level
``filter`` of ``hybrid_search`` is silently ignored by pymilvus + Milvus Lite.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

import grpc
from pymilvus import (
    AnnSearchRequest,
    DataType,
    Function,
    FunctionType,
    MilvusClient,
    RRFRanker,
    WeightedRanker,
)
from pymilvus.client.types import Status
from pymilvus.exceptions import MilvusException, MilvusUnavailableException

from aimesh_common.errors import AimeshError, FailedPrecondition, NotFound, Unavailable
from aimesh_retrieval.chunking import ChunkingConfig
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
# Stale-chunk deletes combine documents into one expression up to this many characters (a
# delete by expression costs a server one query: one call per write, not one per document).
DELETE_EXPR_CHARS = 60_000
# Milvus failures that mean "cannot reach Milvus": gRPC codes after pymilvus' own retries,
# and the code pymilvus raises when it cannot (re)connect.
_UNAVAILABLE_CODES: tuple[object, ...] = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    Status.CONNECT_FAILED,
)


class AlreadyExists(AimeshError):
    """The tenant already has a collection of that name."""

    code = grpc.StatusCode.ALREADY_EXISTS


SearchMode = Literal["dense", "bm25", "hybrid"]
FusionKind = Literal["rrf", "weighted"]
RRF_K = 60
# Written into collection descriptions; collections without it predate the settings.
SETTINGS_VERSION = 1
SETTINGS_PROPERTY = "aimesh.settings"
# A random mark set by the create that made the collection (see MilvusStore._create).
CREATION_PROPERTY = "aimesh.creation"
_VERSION = re.compile(r"v?(\d+)\.(\d+)")


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
class CollectionMeta:
    """What is known of an existing collection."""

    name: str
    dimension: int
    chunking: ChunkingConfig | None
    index: IndexConfig
    full_text: bool

    def describe(self, tenant_id: str) -> str:
        return json.dumps(
            {
                "aimesh": SETTINGS_VERSION,
                "tenant": tenant_id,
                "name": self.name,
                "chunking": asdict(self.chunking) if self.chunking else None,
                "index": asdict(self.index),
                "full_text": self.full_text,
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
        self,
        client: MilvusClient,
        *,
        server: bool,
        workers: int = 4,
        timeout: float = 30.0,
        search_ef: int = 128,
        search_consistency: str = "Session",
    ) -> None:
        self._client = client
        self._search_ef = search_ef
        self._search_consistency = search_consistency
        self._server = server
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="milvus")
        # Physical name -> metadata of collections known to exist and be loaded in this
        # process. A collection dropped by another replica shows up as a Milvus error on
        # the next use, which evicts the entry (see ``_gone``).
        self._ready: dict[str, CollectionMeta] = {}
        self._full_text: bool | None = None
        self._creating = asyncio.Lock()

    @property
    def is_server(self) -> bool:
        return self._server

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
            search_ef=settings.hnsw_search_ef,
            search_consistency=settings.milvus_search_consistency,
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

    async def full_text_supported(self) -> bool:
        """Whether the backend has BM25 full-text search: Milvus Lite, or a server >= 2.5."""
        if self._full_text is None:
            if not self._server:
                self._full_text = True
            else:
                version = await self._run(self._client.get_server_version)
                found = _VERSION.match(str(version))
                self._full_text = found is not None and (
                    (int(found.group(1)), int(found.group(2))) >= (2, 5)
                )
        return self._full_text

    async def meta(self, ref: CollectionRef) -> CollectionMeta | None:
        """An existing collection's metadata (loading the collection), or None."""
        name = ref.physical
        if name in self._ready:
            return self._ready[name]
        if not await self._run(self._client.has_collection, name):
            return None
        description = await self._run(self._client.describe_collection, name)
        meta = _meta_from(ref.name, description)
        # Collections are released after a restart; searching needs them loaded.
        await self._run(self._client.load_collection, name)
        self._ready[name] = meta
        return meta

    async def dimension(self, ref: CollectionRef) -> int | None:
        """The vector dimension of an existing collection (loading it), or None."""
        meta = await self.meta(ref)
        return meta.dimension if meta else None

    async def require(self, ref: CollectionRef) -> int:
        """The dimension of an existing collection; NOT_FOUND when it does not exist."""
        dim = await self.dimension(ref)
        if dim is None:
            raise ref.not_found()
        return dim

    async def require_meta(self, ref: CollectionRef) -> CollectionMeta:
        meta = await self.meta(ref)
        if meta is None:
            raise ref.not_found()
        return meta

    def default_index(self) -> IndexConfig:
        return IndexConfig("HNSW") if self._server else IndexConfig("FLAT")

    async def create(
        self,
        ref: CollectionRef,
        dim: int,
        *,
        chunking: ChunkingConfig | None = None,
        index: IndexConfig | None = None,
        exist_ok: bool = True,
    ) -> CollectionMeta:
        """Create (if missing) and load the collection with ``dim``-dimensional vectors.

        With ``exist_ok=False`` an existing collection is ALREADY_EXISTS.
        """
        known = self._ready.get(ref.physical)
        if known is not None and exist_ok:
            return known
        # Several jobs of one upload may create the same new collection at once: one
        # creates it, the others wait and find it. Creating is rare, so one lock serves.
        async with self._creating:
            return await self._create(ref, dim, chunking, index, exist_ok=exist_ok)

    async def _create(
        self,
        ref: CollectionRef,
        dim: int,
        chunking: ChunkingConfig | None,
        index: IndexConfig | None,
        *,
        exist_ok: bool,
    ) -> CollectionMeta:
        name = ref.physical
        existing = await self.meta(ref)
        if existing is not None:
            if not exist_ok:
                raise AlreadyExists(f"collection '{ref.name}' already exists")
            return existing
        index = index or self.default_index()
        if index.index_type == "HNSW" and not self._server:
            raise FailedPrecondition("Milvus Lite supports only the FLAT index; use a server")
        full_text = await self.full_text_supported()
        meta = CollectionMeta(ref.name, dim, chunking, index, full_text)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_CHUNK_ID_BYTES)
        schema.add_field("document_id", DataType.VARCHAR, max_length=MAX_DOCUMENT_ID_BYTES)
        schema.add_field("chunk_index", DataType.INT64)
        schema.add_field("chunk_count", DataType.INT64)
        text_options: dict[str, Any] = {"enable_analyzer": True} if full_text else {}
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES, **text_options)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        params = self._client.prepare_index_params()
        if index.index_type == "HNSW":
            params.add_index(
                field_name="embedding",
                index_type="HNSW",
                metric_type="COSINE",
                params={"M": index.hnsw_m, "efConstruction": index.hnsw_ef_construction},
            )
        else:
            params.add_index(field_name="embedding", index_type="FLAT", metric_type="COSINE")
        if full_text:
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="text_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["text"],
                    output_field_names=["sparse"],
                )
            )
            params.add_index(
                field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25"
            )
        # A Milvus server answers a create of an existing collection with the same schema
        # with success, so a creation mark tells this create from another replica's.
        mark = uuid.uuid4().hex
        try:
            await self._run(
                self._client.create_collection,
                name,
                schema=schema,
                index_params=params,
                # Reads must see the preceding writes: the content-hash check and the
                # stale-chunk cleanup depend on it.
                consistency_level="Strong",
                properties={
                    SETTINGS_PROPERTY: meta.describe(ref.tenant_id),
                    CREATION_PROPERTY: mark,
                },
            )
        except MilvusException:
            # Another replica may have created it between our check and our create.
            if not await self._run(self._client.has_collection, name):
                raise
            return await self._created_elsewhere(ref, exist_ok=exist_ok)
        if self._server:
            description = await self._run(self._client.describe_collection, name)
            if (description.get("properties") or {}).get(CREATION_PROPERTY) != mark:
                return await self._created_elsewhere(ref, exist_ok=exist_ok)
        # Load right away: the first search on a growing segment is slow otherwise.
        await self._run(self._client.load_collection, name)
        self._ready[name] = meta
        log.info("created collection", extra={"collection": name, "dimension": dim})
        return meta

    async def _created_elsewhere(
        self, ref: CollectionRef, *, exist_ok: bool, attempts: int = 20
    ) -> CollectionMeta:
        """The metadata of a collection another replica is creating, once it is loadable
        (ALREADY_EXISTS for an exclusive create).

        Its index may still be building for a moment, so loading is retried briefly.
        """
        if not exist_ok:
            raise AlreadyExists(f"collection '{ref.name}' already exists")
        for attempt in range(attempts):
            try:
                meta = await self.meta(ref)
            except MilvusException:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))
                continue
            if meta is not None:
                return meta
            break
        raise Unavailable(f"collection '{ref.name}' was dropped while it was being created")

    async def list_collections(self, tenant_id: str) -> list[CollectionMeta]:
        """The tenant's collections, sorted by name."""
        prefix = tenant_prefix(tenant_id)
        names = [n for n in await self._run(self._client.list_collections) if n.startswith(prefix)]
        found: list[CollectionMeta] = []
        for name in names:
            description = await self._run(self._client.describe_collection, name)
            settings = _settings_of(description)
            if settings is None or settings.get("tenant") != tenant_id:
                continue
            found.append(_meta_from(str(settings.get("name", "")), description))
        return sorted(found, key=lambda meta: meta.name)

    async def drop(self, ref: CollectionRef) -> None:
        """Drop the collection and all its rows; NOT_FOUND when it does not exist."""
        name = ref.physical
        self._ready.pop(name, None)
        if not await self._run(self._client.has_collection, name):
            raise ref.not_found()
        await self._run(self._client.drop_collection, name)
        log.info("dropped collection", extra={"collection": name})

    def _gone(self, ref: CollectionRef, error: MilvusException) -> bool:
        """True (and the cache entry evicted) when ``error`` says the collection is gone."""
        if "collection not found" in str(error.message).lower() or "can't find collection" in (
            str(error.message).lower()
        ):
            self._ready.pop(ref.physical, None)
            return True
        return False

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
        await self._upsert(ref, [row for row in rows if row.chunk_index > 0])
        for expr in _stale_chunk_filters(counts):
            await self._run(self._client.delete, ref.physical, filter=expr)
        await self._upsert(ref, [row for row in rows if row.chunk_index == 0])

    async def _upsert(self, ref: CollectionRef, rows: Sequence[ChunkRow]) -> None:
        # Entities (with their vectors as Python lists) exist one write call at a time.
        for start in range(0, len(rows), WRITE_BATCH_ROWS):
            entities = [row.to_entity() for row in rows[start : start + WRITE_BATCH_ROWS]]
            await self._run(self._client.upsert, ref.physical, entities)

    async def settle(self, ref: CollectionRef) -> None:
        """Wait until every write made so far is visible to searches from any replica.

        Searches run at the cheaper Session level (this process's own writes), so a write
        made through another replica is guaranteed visible only once the query node has
        consumed it: a Strong-consistency query waits for exactly that. Upserts, deletes
        and ingestion jobs call this before they report success. Milvus Lite is one local
        process where every read sees the preceding writes: nothing to wait for.
        """
        if not self._server:
            return
        await self._run(
            self._client.query,
            ref.physical,
            filter='document_id == ""',
            output_fields=["document_id"],
            limit=1,
            consistency_level="Strong",
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
        self,
        ref: CollectionRef,
        vector: Sequence[float],
        top_k: int,
        expr: str,
        *,
        query: str = "",
        options: SearchOptions | None = None,
    ) -> list[Hit]:
        """The ``top_k`` chunks best matching the query that match ``expr``, best first.

        ``vector`` is the query's embedding, ``query`` its text (for BM25). Scores are
        cosine similarities (dense), BM25 scores (bm25), or fused scores (hybrid).
        """
        options = options or SearchOptions()
        meta = await self.require_meta(ref)
        if options.mode != "dense" and not meta.full_text:
            reason = (
                "this Milvus server has no BM25 full-text search (it needs Milvus >= 2.5)"
                if not await self.full_text_supported()
                else f"collection '{ref.name}' was created without full-text search"
            )
            raise FailedPrecondition(f"{options.mode} search is unavailable: {reason}")
        # MMR picks among more candidates than it returns, comparing their vectors.
        limit = min(max(top_k * 4, 20), 200) if options.mmr else top_k
        fields = ["document_id", "chunk_index", "text", "metadata"]
        if options.mmr:
            fields.append("embedding")
        dense_params: dict[str, Any] = {"metric_type": "COSINE"}
        if meta.index.index_type == "HNSW":
            dense_params["params"] = {"ef": max(self._search_ef, limit)}
        try:
            if options.mode == "dense":
                results = await self._run(
                    self._client.search,
                    ref.physical,
                    data=[list(vector)],
                    filter=expr,
                    limit=limit,
                    output_fields=fields,
                    search_params=dense_params,
                    anns_field="embedding",
                    consistency_level=self._search_consistency,
                )
            elif options.mode == "bm25":
                results = await self._run(
                    self._client.search,
                    ref.physical,
                    data=[query],
                    filter=expr,
                    limit=limit,
                    output_fields=fields,
                    search_params={"metric_type": "BM25"},
                    anns_field="sparse",
                    consistency_level=self._search_consistency,
                )
            else:
                # Candidates per ranking: fusion needs more than the final top_k of each.
                candidates = min(max(limit * 3, 30), 300)
                requests = [
                    # The filter goes into EACH request: hybrid_search ignores a top-level one.
                    AnnSearchRequest(
                        data=[list(vector)],
                        anns_field="embedding",
                        param=dense_params,
                        limit=candidates,
                        expr=expr or None,
                    ),
                    AnnSearchRequest(
                        data=[query],
                        anns_field="sparse",
                        param={"metric_type": "BM25"},
                        limit=candidates,
                        expr=expr or None,
                    ),
                ]
                ranker = (
                    WeightedRanker(options.dense_weight, 1.0 - options.dense_weight)
                    if options.fusion == "weighted"
                    else RRFRanker(RRF_K)
                )
                results = await self._run(
                    self._client.hybrid_search,
                    ref.physical,
                    requests,
                    ranker,
                    limit=limit,
                    output_fields=fields,
                    consistency_level=self._search_consistency,
                )
        except MilvusException as error:
            if self._gone(ref, error):
                raise ref.not_found() from None
            raise
        hits: list[Hit] = []
        vectors: list[list[float]] = []
        for result in results[0] if results else []:
            entity = result["entity"]
            hits.append(
                Hit(
                    document_id=entity["document_id"],
                    chunk_id=str(result["id"]),
                    chunk_index=int(entity["chunk_index"]),
                    text=entity["text"],
                    # Milvus Lite reports BM25 scores negated (as distances); show them
                    # as the positive, higher-is-better scores a server returns.
                    score=abs(float(result["distance"]))
                    if options.mode == "bm25"
                    else float(result["distance"]),
                    metadata=entity.get("metadata") or {},
                )
            )
            if options.mmr:
                vectors.append([float(x) for x in entity["embedding"]])
        if options.mmr:
            order = mmr_select(vector, vectors, top_k, options.mmr_lambda)
            hits = [hits[i] for i in order]
        return hits[:top_k]

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._client.close)
        self._pool.shutdown(wait=True)


def _stale_chunk_filters(counts: Mapping[str, int]) -> list[str]:
    """Filters matching the chunks of each document at or past its new count, documents
    with the same count grouped (``chunk_index >= n and document_id in [...]``), each filter
    at most about DELETE_EXPR_CHARS long."""
    by_count: dict[int, list[str]] = {}
    for document, count in counts.items():
        by_count.setdefault(count, []).append(quote(document))
    filters: list[str] = []
    terms: list[str] = []
    length = 0

    def flush() -> None:
        nonlocal terms, length
        if terms:
            filters.append(" or ".join(terms))
        terms, length = [], 0

    for count, quoted in sorted(by_count.items()):
        ids: list[str] = []
        for item in quoted:
            if ids and length + len(item) > DELETE_EXPR_CHARS:
                terms.append(f"(chunk_index >= {count} and document_id in [{', '.join(ids)}])")
                flush()
                ids = []
            ids.append(item)
            length += len(item) + 2
        terms.append(f"(chunk_index >= {count} and document_id in [{', '.join(ids)}])")
        length += 40
    flush()
    return filters


def _stored(row: Mapping[str, Any]) -> StoredDocument:
    return StoredDocument(
        document_id=row["document_id"],
        chunks=int(row["chunk_count"]),
        content_hash=row["content_hash"],
        metadata=row.get("metadata") or {},
    )


def mmr_select(
    query: Sequence[float], candidates: Sequence[Sequence[float]], k: int, lam: float
) -> list[int]:
    """Maximal marginal relevance: indices of ``k`` candidates, most useful first.

    Each step takes the candidate maximizing ``lam * sim(query, c) - (1 - lam) *
    max(sim(c, chosen))`` with cosine similarity, trading relevance for novelty.
    """

    def cosine(a: Sequence[float], b: Sequence[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        return dot / norm if norm else 0.0

    relevance = [cosine(query, c) for c in candidates]
    chosen: list[int] = []
    redundancy = [-math.inf] * len(candidates)
    while len(chosen) < min(k, len(candidates)):
        best, best_score = -1, -math.inf
        for i in range(len(candidates)):
            if i in chosen:
                continue
            penalty = redundancy[i] if chosen else 0.0
            score = lam * relevance[i] - (1.0 - lam) * penalty
            if score > best_score:
                best, best_score = i, score
        chosen.append(best)
        for i in range(len(candidates)):
            redundancy[i] = max(redundancy[i], cosine(candidates[i], candidates[best]))
    return chosen


def _settings_of(description: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        settings = json.loads((description.get("properties") or {}).get(SETTINGS_PROPERTY, ""))
    except ValueError:
        return None
    if not isinstance(settings, dict) or settings.get("aimesh") != SETTINGS_VERSION:
        return None
    return settings


def _meta_from(name: str, description: Mapping[str, Any]) -> CollectionMeta:
    """Metadata from ``describe_collection``; older collections get the legacy defaults."""
    dim = _vector_dimension(description)
    fields = {f.get("name") for f in description.get("fields", [])}
    settings = _settings_of(description) or {}
    chunking = settings.get("chunking")
    index = settings.get("index")
    return CollectionMeta(
        name=name,
        dimension=dim,
        chunking=ChunkingConfig(**chunking) if isinstance(chunking, dict) else None,
        index=IndexConfig(**index) if isinstance(index, dict) else IndexConfig(),
        full_text="sparse" in fields,
    )


def _vector_dimension(description: Mapping[str, Any]) -> int:
    for field in description.get("fields", []):
        if field.get("name") == "embedding":
            return int(field.get("params", {}).get("dim", 0))
    raise RuntimeError("collection has no embedding field")
