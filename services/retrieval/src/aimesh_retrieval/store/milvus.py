"""``MilvusStore``: the store's async API over the synchronous ``MilvusClient``.

The client runs in a small dedicated thread pool: the async client is incomplete on
Milvus Lite (``create_collection`` answers UNIMPLEMENTED there). Collection layout is in
:mod:`.collections`, the search kinds in :mod:`.search`, write filters in :mod:`.writes`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

import grpc
from pymilvus import MilvusClient
from pymilvus.client.types import Status
from pymilvus.exceptions import MilvusException, MilvusUnavailableException

from aimesh_common.errors import FailedPrecondition, Unavailable
from aimesh_retrieval.chunking import ChunkingConfig
from aimesh_retrieval.config import Settings
from aimesh_retrieval.store.collections import (
    CREATION_PROPERTY,
    SETTINGS_PROPERTY,
    collection_schema,
    has_full_text,
    index_params,
    meta_from,
    settings_of,
)
from aimesh_retrieval.store.model import (
    AlreadyExists,
    ChunkRow,
    CollectionMeta,
    CollectionRef,
    FusionDefault,
    Hit,
    IndexConfig,
    SearchMode,
    SearchOptions,
    StoredDocument,
    tenant_prefix,
)
from aimesh_retrieval.store.search import SEARCHES, plan_search, to_hits
from aimesh_retrieval.store.writes import (
    DOCUMENT_FIELDS,
    WRITE_BATCH_ROWS,
    document_filter,
    first_chunks_filter,
    stale_chunk_filters,
    stored_document,
)

log = logging.getLogger("aimesh.retrieval.store")

T = TypeVar("T")


class UnimplementedLiteCall(logging.Filter):
    """Drops the traceback Milvus Lite's embedded gRPC server logs (on ``grpc._server``, at
    ERROR) for each call pymilvus makes that Milvus Lite does not implement: pymilvus asks
    for ``AllocTimestamp`` when a collection is created, gets UNIMPLEMENTED and does without.
    Two such tracebacks at every start read as a failure to an operator; nothing failed.
    Only the stock "Method not implemented!" of an unimplemented servicer is dropped (this
    service's own gRPC server is grpc.aio and never logs there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (
            isinstance(error, NotImplementedError) and str(error) == "Method not implemented!"
        )


_LITE_FILTER = UnimplementedLiteCall()

# Seconds a replica trusts its cached collection settings before reading them again: how
# long a settings change made through another replica may take to show.
SETTINGS_TTL = 30.0

# Milvus failures that mean "cannot reach Milvus": gRPC codes after pymilvus' own retries,
# and the code pymilvus raises when it cannot (re)connect.
_UNAVAILABLE_CODES: tuple[object, ...] = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    Status.CONNECT_FAILED,
)


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
        lite_flush_rows: int = 0,
        lite_flush_seconds: float = 0.0,
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
        # When each entry's settings were last read (monotonic seconds).
        self._described: dict[str, float] = {}
        self._full_text: bool | None = None
        self._creating = asyncio.Lock()
        # Milvus Lite: rows written or deleted per collection since its last flush, and when
        # the first of them was (only collections with unflushed writes; dropped on flush
        # and on drop).
        self._lite_flush_rows = 0 if server else lite_flush_rows
        self._lite_flush_seconds = 0.0 if server else lite_flush_seconds
        self._unflushed: dict[str, tuple[int, float]] = {}

    @property
    def is_server(self) -> bool:
        return self._server

    @classmethod
    def open(cls, settings: Settings) -> MilvusStore:
        """Connect to the configured Milvus (starting Milvus Lite for a file URI)."""
        if not settings.milvus_is_server:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            # Added once however many stores open (a logger keeps each filter once).
            logging.getLogger("grpc._server").addFilter(_LITE_FILTER)
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
            lite_flush_rows=settings.milvus_lite_flush_rows,
            lite_flush_seconds=settings.milvus_lite_flush_seconds,
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
                self._full_text = has_full_text(str(version))
        return self._full_text

    async def meta(self, ref: CollectionRef) -> CollectionMeta | None:
        """An existing collection's metadata (loading the collection), or None."""
        name = ref.physical
        if name in self._ready:
            if time.monotonic() - self._described.get(name, 0.0) < SETTINGS_TTL:
                return self._ready[name]
            # Loaded already; read the settings again (another replica may change them).
            try:
                description = await self._run(self._client.describe_collection, name)
            except MilvusException as error:
                if self._gone(ref, error):
                    return None
                raise
            self._remember(name, meta_from(ref.name, description))
            return self._ready[name]
        if not await self._run(self._client.has_collection, name):
            return None
        description = await self._run(self._client.describe_collection, name)
        meta = meta_from(ref.name, description)
        # Collections are released after a restart; searching needs them loaded.
        await self._run(self._client.load_collection, name)
        self._remember(name, meta)
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
        rerank: bool = False,
    ) -> CollectionMeta:
        """Create (if missing) and load the collection with ``dim``-dimensional vectors.

        With ``exist_ok=False`` an existing collection is ALREADY_EXISTS. ``rerank`` is
        the collection's default for searches that do not say whether to rerank.
        """
        known = self._ready.get(ref.physical)
        if known is not None and exist_ok:
            return known
        # Several jobs of one upload may create the same new collection at once: one
        # creates it, the others wait and find it. Creating is rare, so one lock serves.
        async with self._creating:
            return await self._create(ref, dim, chunking, index, exist_ok=exist_ok, rerank=rerank)

    async def _create(
        self,
        ref: CollectionRef,
        dim: int,
        chunking: ChunkingConfig | None,
        index: IndexConfig | None,
        *,
        exist_ok: bool,
        rerank: bool = False,
    ) -> CollectionMeta:
        """Create the collection unless it exists (or another replica creates it first)."""
        existing = await self.meta(ref)
        if existing is not None:
            if not exist_ok:
                raise AlreadyExists(f"collection '{ref.name}' already exists")
            return existing
        meta = replace(await self._new_meta(ref, dim, chunking, index), rerank=rerank)
        if not await self._create_marked(ref, meta):
            return await self._created_elsewhere(ref, exist_ok=exist_ok)
        # Load right away: the first search on a growing segment is slow otherwise.
        await self._run(self._client.load_collection, ref.physical)
        self._remember(ref.physical, meta)
        log.info("created collection", extra={"collection": ref.physical, "dimension": dim})
        return meta

    async def _new_meta(
        self,
        ref: CollectionRef,
        dim: int,
        chunking: ChunkingConfig | None,
        index: IndexConfig | None,
    ) -> CollectionMeta:
        """The settings of a collection about to be created, checked against the backend."""
        index = index or self.default_index()
        if index.index_type == "HNSW" and not self._server:
            raise FailedPrecondition("Milvus Lite supports only the FLAT index; use a server")
        full_text = await self.full_text_supported()
        return CollectionMeta(ref.name, dim, chunking, index, full_text)

    async def _create_marked(self, ref: CollectionRef, meta: CollectionMeta) -> bool:
        """Create the collection; False when another replica created it first.

        A Milvus server answers a create of an existing collection with the same schema
        with success, so a random creation mark tells this create from another replica's.
        """
        name = ref.physical
        mark = uuid.uuid4().hex
        try:
            await self._run(
                self._client.create_collection,
                name,
                schema=collection_schema(meta),
                index_params=index_params(meta),
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
            if not await self._appears(name):
                raise
            return False
        if self._server:
            description = await self._run(self._client.describe_collection, name)
            return (description.get("properties") or {}).get(CREATION_PROPERTY) == mark
        return True

    async def _appears(self, name: str, attempts: int = 5) -> bool:
        """Whether collection ``name`` exists, looking again briefly when it does not yet.

        Milvus Lite refuses a second create as soon as the first one has made the
        collection's directory, but shows the collection only once its schema is written.
        """
        for attempt in range(attempts):
            if await self._run(self._client.has_collection, name):
                return True
            if attempt < attempts - 1:
                await asyncio.sleep(0.05 * (attempt + 1))
        return False

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
            settings = settings_of(description)
            if settings is None or settings.get("tenant") != tenant_id:
                continue
            found.append(meta_from(str(settings.get("name", "")), description))
        return sorted(found, key=lambda meta: meta.name)

    async def set_fusion(self, ref: CollectionRef, fusion: FusionDefault | None) -> CollectionMeta:
        """Store ``fusion`` as the collection's default hybrid fusion (None: remove it);
        NOT_FOUND when the collection does not exist. Other replicas see it once their
        cached settings expire (``SETTINGS_TTL``)."""
        meta = await self.require_meta(ref)
        updated = dataclasses.replace(meta, fusion=fusion)
        try:
            await self._run(
                self._client.alter_collection_properties,
                ref.physical,
                properties={SETTINGS_PROPERTY: updated.describe(ref.tenant_id)},
            )
        except MilvusException as error:
            if self._gone(ref, error):
                raise ref.not_found() from None
            raise
        self._remember(ref.physical, updated)
        return updated

    def _remember(self, name: str, meta: CollectionMeta) -> None:
        self._ready[name] = meta
        self._described[name] = time.monotonic()

    async def drop(self, ref: CollectionRef) -> None:
        """Drop the collection and all its rows; NOT_FOUND when it does not exist."""
        name = ref.physical
        self._ready.pop(name, None)
        self._unflushed.pop(name, None)
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
        rows = await self._run(
            self._client.query,
            ref.physical,
            filter=first_chunks_filter(ids),
            output_fields=DOCUMENT_FIELDS,
            limit=len(ids),
        )
        return {row["document_id"]: stored_document(row) for row in rows}

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
        for expr in stale_chunk_filters(counts):
            await self._run(self._client.delete, ref.physical, filter=expr)
        await self._upsert(ref, [row for row in rows if row.chunk_index == 0])
        await self._written(ref, len(rows))

    async def _written(self, ref: CollectionRef, rows: int) -> None:
        """Flush a Milvus Lite collection once ``lite_flush_rows`` rows changed since the last,
        or at a write ``lite_flush_seconds`` or more after the first unflushed one.

        Milvus Lite keeps writes in a memtable that each search scans in Python (dense and
        BM25 alike) and flushes it only at 128 MiB: a collection fed a few documents a
        minute is searched slower every minute (3,000 unflushed rows made a dense search
        about 6 times slower than the same rows flushed, on a busy machine). A flush turns
        the buffer into an immutable segment with its index; Milvus Lite compacts small
        segments itself. The age bound keeps a collection written a document at a time
        from scanning a buffer that refills for tens of minutes: with rows alone, a search
        grew slower until each flush and fell back after it (a saw-tooth of 256 rows, one
        every 21 minutes at a document each 5 s).
        """
        if self._lite_flush_rows <= 0 or rows <= 0:
            return
        name = ref.physical
        now = time.monotonic()
        before, since = self._unflushed.get(name, (0, now))
        pending = before + rows
        aged = self._lite_flush_seconds > 0 and now - since >= self._lite_flush_seconds
        if pending < self._lite_flush_rows and not aged:
            self._unflushed[name] = (pending, since)
            return
        self._unflushed.pop(name, None)
        started = time.perf_counter()
        await self._run(self._client.flush, name)
        log.debug(
            "flushed collection",
            extra={"collection": name, "rows": pending, "seconds": time.perf_counter() - started},
        )

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
            filter=document_filter(document_id),
            output_fields=["count(*)"],
        )
        return int(rows[0]["count(*)"]) if rows else 0

    async def delete_document(self, ref: CollectionRef, document_id: str) -> int:
        """Remove every chunk of ``document_id``; returns how many there were."""
        count = await self.count_chunks(ref, document_id)
        if count:
            await self._run(self._client.delete, ref.physical, filter=document_filter(document_id))
            await self._written(ref, count)
        return count

    async def list_documents(self, ref: CollectionRef, limit: int) -> list[StoredDocument]:
        """Up to ``limit`` documents, sorted by id."""
        rows = await self._run(
            self._client.query,
            ref.physical,
            filter="chunk_index == 0",
            output_fields=DOCUMENT_FIELDS,
            limit=limit,
        )
        return sorted((stored_document(row) for row in rows), key=lambda doc: doc.document_id)

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
            raise await self._no_full_text(ref, options.mode)
        plan = plan_search(
            ref.physical,
            meta,
            vector,
            query,
            top_k,
            expr,
            options,
            search_ef=self._search_ef,
            consistency=self._search_consistency,
        )
        try:
            results = await self._run(SEARCHES[options.mode], self._client, plan)
        except MilvusException as error:
            if self._gone(ref, error):
                raise ref.not_found() from None
            raise
        return to_hits(results, plan)

    async def _no_full_text(self, ref: CollectionRef, mode: SearchMode) -> FailedPrecondition:
        """Why a BM25 or hybrid search of ``ref`` cannot run."""
        reason = (
            "this Milvus server has no BM25 full-text search (it needs Milvus >= 2.5)"
            if not await self.full_text_supported()
            else f"collection '{ref.name}' was created without full-text search"
        )
        return FailedPrecondition(f"{mode} search is unavailable: {reason}")

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._client.close)
        self._pool.shutdown(wait=True)
