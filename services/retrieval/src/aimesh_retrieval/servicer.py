"""The RetrievalService gRPC servicer: validation, chunking, embedding, storage, search."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc

from aimesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from aimesh_common.embedding_client import EmbeddingClient, ModelInfo
from aimesh_common.errors import FailedPrecondition, InvalidArgument, NotFound
from aimesh_common.limits import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_TOP_K,
    MAX_LIST_LIMIT,
    MAX_QUERY_CHARS,
    MAX_SEARCH_TOP_K,
)
from aimesh_common.structs import to_struct
from aimesh_retrieval import metrics, validation
from aimesh_retrieval.chunking import (
    HEADING_TYPES,
    MAX_TITLE_CHARS,
    ChunkContext,
    Chunker,
    ChunkingConfig,
    sections,
)
from aimesh_retrieval.filters import translate_filter
from aimesh_retrieval.jobs import (
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Job,
    JobDocument,
    JobRunner,
    JobStore,
)
from aimesh_retrieval.rerank import Reranker, rerank_hits
from aimesh_retrieval.store import (
    ChunkRow,
    CollectionMeta,
    CollectionRef,
    FusionDefault,
    FusionKind,
    IndexConfig,
    MilvusStore,
    RowContext,
    SearchMode,
    SearchOptions,
)

log = logging.getLogger("aimesh.retrieval")

Context = grpc.aio.ServicerContext[Any, Any]

MAX_CHUNKERS = 32
_MODES: dict[int, SearchMode] = {
    retrieval_pb2.SEARCH_MODE_UNSPECIFIED: "dense",
    retrieval_pb2.SEARCH_MODE_DENSE: "dense",
    retrieval_pb2.SEARCH_MODE_BM25: "bm25",
    retrieval_pb2.SEARCH_MODE_HYBRID: "hybrid",
}
_FUSIONS: dict[int, FusionKind] = {
    retrieval_pb2.FUSION_ADAPTIVE: "adaptive",
    retrieval_pb2.FUSION_RRF: "rrf",
    retrieval_pb2.FUSION_WEIGHTED: "weighted",
}


@dataclass(frozen=True)
class _Prepared:
    """A validated document, split into chunks with ``chunking``."""

    id: str
    text: str
    chunks: list[str]
    metadata: dict[str, Any]
    chunking: ChunkingConfig
    # Per chunk, with chunk context: its title, section and header (else None).
    contexts: list[RowContext] | None = None

    def embedded_texts(self) -> list[str]:
        """What is embedded of each chunk: its header line, a blank line, and its text."""
        if self.contexts is None:
            return self.chunks
        return [c.prefix + chunk for c, chunk in zip(self.contexts, self.chunks, strict=True)]

    def content_hash(self, model: str) -> str:
        """What decides whether a stored copy is up to date: the text, the metadata, the
        chunking (re-chunk when it changes) and the model (after a model change the next
        upsert re-embeds instead of keeping vectors of the old model)."""
        fingerprint = json.dumps(
            {
                "text": self.text,
                "metadata": self.metadata,
                "chunking": [
                    self.chunking.chunk_size,
                    self.chunking.chunk_overlap,
                    self.chunking.markdown,
                    self.chunking.unit,
                    # Only when on: hashes of documents without it stay as they were.
                    *(["context"] if self.chunking.context else []),
                ],
            },
            sort_keys=True,
            ensure_ascii=False,
        ).encode()
        return hashlib.sha256(model.encode() + b"\0" + fingerprint).hexdigest()


@dataclass(frozen=True)
class _Plan:
    """What an upsert will write: the embedded chunk rows of the changed documents."""

    ref: CollectionRef
    chunking: ChunkingConfig
    dimension: int
    results: list[retrieval_pb2.UpsertResult]
    rows: list[ChunkRow]
    stored: frozenset[str]
    """Ids among the documents that were stored before."""
    create: bool
    """The collection did not exist when the plan was made."""


class CollectionLocks:
    """One write lock per collection, held only while it is in use.

    The map's values are weak: a lock no writer holds or waits for disappears, so the map
    holds the collections being written right now, not every collection ever written (a
    tenant that creates and deletes collections all day would otherwise grow it without
    end). Mutual exclusion is kept: while any coroutine holds or awaits a collection's lock,
    that lock is referenced and every other writer gets the same one.
    """

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def get(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def __len__(self) -> int:
        return len(self._locks)


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    """Implements aimesh.retrieval.v1.RetrievalService.

    Writes to one collection are serialized by a per-collection lock (within this
    process), so concurrent upserts of the same document cannot interleave their chunk
    rows. Searches take no lock.
    """

    def __init__(
        self,
        store: MilvusStore,
        embedder: EmbeddingClient,
        chunker: Chunker,
        *,
        max_documents_per_request: int,
        max_document_chars: int,
        fusion: FusionKind = "adaptive",
        dense_weight: float = 0.9,
        jobs: JobStore | None = None,
        job_lease: float = 30.0,
        reranker: Reranker | None = None,
        rerank_candidates: int = 50,
    ) -> None:
        self._reranker = reranker
        self._rerank_candidates = rerank_candidates
        self._jobs = jobs
        self.runner: JobRunner | None = (
            JobRunner(
                jobs,
                self._prepare_job_batch,
                self._write_job_batch,
                self._settle_job,
                lease=job_lease,
            )
            if jobs is not None
            else None
        )
        self._store = store
        self._embedder = embedder
        # The chunking of new collections created implicitly by an upsert.
        self._default_chunking = chunker.config
        self._chunkers: dict[ChunkingConfig, Chunker] = {chunker.config: chunker}
        self._fusion: FusionKind = fusion
        self._dense_weight = dense_weight
        self._max_documents = max_documents_per_request
        self._max_chars = max_document_chars
        self._locks = CollectionLocks()

    def _lock(self, ref: CollectionRef) -> asyncio.Lock:
        return self._locks.get(ref.physical)

    async def _model_for(self, ref: CollectionRef, stored_dim: int | None) -> ModelInfo:
        info = await self._embedder.info()
        if stored_dim is not None and stored_dim != info.dimension:
            raise FailedPrecondition(
                f"collection '{ref.name}' holds {stored_dim}-dimensional vectors but the "
                f"embedding model {info.model!r} produces {info.dimension}; re-index it"
            )
        return info

    # UpsertDocuments

    def _chunker_for(self, meta: CollectionMeta | None) -> Chunker:
        config = meta.chunking if meta and meta.chunking else self._default_chunking
        if meta is not None and config.context != meta.context:
            # A collection from before the settings: its schema has no context fields.
            config = replace(config, context=meta.context)
        chunker = self._chunkers.get(config)
        if chunker is None:
            # One per distinct chunking setting in use; bounded, the oldest dropped first.
            if len(self._chunkers) >= MAX_CHUNKERS:
                del self._chunkers[next(iter(self._chunkers))]
            chunker = self._chunkers[config] = Chunker.from_config(config)
        return chunker

    def _prepare(
        self,
        documents: Sequence[retrieval_pb2.Document],
        chunker: Chunker,
        offset: int = 0,
        *,
        per_request_limit: bool = True,
    ) -> list[_Prepared]:
        """Validate and chunk the documents (CPU work, run off the event loop).

        A job's batch (``per_request_limit=False``) is bounded by chunks instead of by the
        documents of one request."""
        if not documents:
            raise InvalidArgument("documents must not be empty")
        if per_request_limit and len(documents) > self._max_documents:
            raise InvalidArgument(
                f"documents has {len(documents)} items; at most {self._max_documents} "
                "are allowed per request"
            )
        seen: set[str] = set()
        valid: list[tuple[str, str, dict[str, Any]]] = []
        for i, document in enumerate(documents):
            field = f"documents[{offset + i}]"
            doc_id = validation.document_id(document.id, f"{field}.id")
            if doc_id in seen:
                raise InvalidArgument(f"{field}.id repeats the id of an earlier document")
            seen.add(doc_id)
            if not document.text.strip():
                raise InvalidArgument(f"{field}.text must not be empty")
            if len(document.text) > self._max_chars:
                raise InvalidArgument(
                    f"{field}.text has {len(document.text)} characters; "
                    f"at most {self._max_chars} are allowed"
                )
            meta = validation.metadata(document.metadata, f"{field}.metadata")
            valid.append((doc_id, document.text, meta))
        # All texts at once: the tokenizer spreads a batch over the cores.
        split = chunker.split_many([text for _, text, _ in valid])
        return [
            _Prepared(
                doc_id,
                text,
                chunks,
                meta,
                chunker.config,
                chunk_contexts(text, chunks, meta, chunker.config),
            )
            for (doc_id, text, meta), chunks in zip(valid, split, strict=True)
        ]

    async def UpsertDocuments(  # noqa: N802 - gRPC method name
        self, request: retrieval_pb2.UpsertDocumentsRequest, context: Context
    ) -> retrieval_pb2.UpsertDocumentsResponse:
        ref = validation.collection_ref(request.tenant_id, request.collection)
        chunker = self._chunker_for(await self._store.meta(ref))
        documents = await asyncio.to_thread(self._prepare, request.documents, chunker)
        results = await self._upsert(ref, chunker, documents, settle=True)
        return retrieval_pb2.UpsertDocumentsResponse(results=results)

    async def _upsert(
        self, ref: CollectionRef, chunker: Chunker, documents: list[_Prepared], *, settle: bool
    ) -> list[retrieval_pb2.UpsertResult]:
        """Store prepared documents: skip unchanged ones, replace changed ones.

        With ``settle``, return only once the writes are searchable from every replica
        (ingestion jobs settle once, at their end, instead of after every batch). The whole
        read-embed-write runs under the collection's lock, so concurrent upserts of one
        document in this process are serialized and each reports what it replaced.
        """
        async with self._lock(ref):
            plan = await self._plan(ref, chunker, documents)
            await self._apply(plan, settle=settle)
        return plan.results

    async def _plan(
        self,
        ref: CollectionRef,
        chunker: Chunker,
        documents: list[_Prepared],
        *,
        create_early: bool = False,
    ) -> _Plan:
        """Decide which documents changed and embed their chunks; writes nothing.

        Embedding everything before writing anything means an embedding failure leaves the
        collection exactly as it was (and does not create it). A job (``create_early``)
        creates a missing collection while its first batch is embedded instead: creating
        and loading an indexed collection takes a Milvus server seconds, and a job that
        then fails leaves an empty collection at worst.
        """
        stored_dim = await self._store.dimension(ref)
        info = await self._model_for(ref, stored_dim)
        stored = (
            await self._store.stored_documents(ref, (doc.id for doc in documents))
            if stored_dim is not None
            else {}
        )
        results: list[retrieval_pb2.UpsertResult] = []
        changed: list[tuple[_Prepared, str]] = []
        for doc in documents:
            content_hash = doc.content_hash(info.model)
            old = stored.get(doc.id)
            if old is not None and old.content_hash == content_hash:
                results.append(retrieval_pb2.UpsertResult(id=doc.id, chunks=old.chunks))
                continue
            changed.append((doc, content_hash))
            results.append(
                retrieval_pb2.UpsertResult(
                    id=doc.id, chunks=len(doc.chunks), replaced=old is not None
                )
            )
        rows: list[ChunkRow] = []
        creating: asyncio.Task[None] | None = None
        if stored_dim is None and create_early and changed:
            creating = asyncio.create_task(self._create(ref, info.dimension, chunker.config))
        if changed:
            texts = [text for doc, _ in changed for text in doc.embedded_texts()]
            try:
                embedded = await self._embedder.embed(texts)
            finally:
                if creating is not None:
                    await creating
            vectors = iter(embedded)
            rows = [
                ChunkRow(
                    document_id=doc.id,
                    chunk_index=index,
                    chunk_count=len(doc.chunks),
                    text=chunk,
                    content_hash=content_hash,
                    metadata=doc.metadata,
                    embedding=next(vectors),
                    context=doc.contexts[index] if doc.contexts is not None else None,
                )
                for doc, content_hash in changed
                for index, chunk in enumerate(doc.chunks)
            ]
        return _Plan(
            ref,
            chunker.config,
            info.dimension,
            results,
            rows,
            frozenset(stored),
            create=stored_dim is None and creating is None,
        )

    async def _create(self, ref: CollectionRef, dimension: int, chunking: ChunkingConfig) -> None:
        async with self._lock(ref):
            await self._store.create(ref, dimension, chunking=chunking)

    async def _apply(self, plan: _Plan, *, settle: bool) -> None:
        """Write a plan's chunk rows (creating the collection on first use); the caller
        holds the collection's lock."""
        if plan.rows:
            if plan.create:
                await self._store.create(plan.ref, plan.dimension, chunking=plan.chunking)
            await self._store.write(plan.ref, plan.rows)
            if settle:
                await self._store.settle(plan.ref)
            metrics.CHUNKS_UPSERTED.inc(len(plan.rows))
        for result in plan.results:
            outcome = "replaced" if result.replaced else "created"
            if result.id in plan.stored and not result.replaced:
                outcome = "unchanged"
            metrics.DOCUMENTS_UPSERTED.labels(outcome).inc()
        log.info(
            "upserted documents",
            extra={
                "collection": plan.ref.name,
                "documents": len(plan.results),
                "changed": len({row.document_id for row in plan.rows}),
            },
        )

    # Ingestion jobs

    async def SubmitIngestJob(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[retrieval_pb2.SubmitIngestJobRequest],
        context: Context,
    ) -> retrieval_pb2.IngestJob:
        if self._jobs is None or self.runner is None:
            raise FailedPrecondition("ingestion jobs are not enabled on this server")
        ref: CollectionRef | None = None
        chunker: Chunker | None = None
        async with self._jobs.submission() as submission:
            async for part in request_iterator:
                if ref is None:
                    ref = validation.collection_ref(part.tenant_id, part.collection)
                    chunker = self._chunker_for(await self._store.meta(ref))
                    submission.target(ref.tenant_id, ref.name)
                elif (part.tenant_id or ref.tenant_id, part.collection or ref.name) != (
                    ref.tenant_id,
                    ref.name,
                ):
                    raise InvalidArgument("every message of a job must name the same collection")
                assert chunker is not None
                for start in range(0, len(part.documents), self._max_documents):
                    docs = part.documents[start : start + self._max_documents]
                    prepared = await asyncio.to_thread(
                        self._prepare, docs, chunker, submission.documents
                    )
                    for offset, doc in enumerate(prepared):
                        if submission.seen(doc.id):
                            raise InvalidArgument(
                                f"documents[{submission.documents + offset}].id repeats the id "
                                "of an earlier document"
                            )
                    await submission.add(
                        [
                            JobDocument(doc.id, doc.text, doc.metadata, len(doc.chunks))
                            for doc in prepared
                        ]
                    )
                    del prepared  # the chunks were only counted
            if ref is None or submission.documents == 0:
                raise InvalidArgument("a job needs at least one document")
        assert submission.job is not None
        metrics.JOBS_SUBMITTED.inc()
        self.runner.wake()
        return _job_message(submission.job)

    async def GetIngestJob(  # noqa: N802 - gRPC method name
        self, request: retrieval_pb2.GetIngestJobRequest, context: Context
    ) -> retrieval_pb2.IngestJob:
        if self._jobs is None:
            raise FailedPrecondition("ingestion jobs are not enabled on this server")
        tenant = validation.collection_ref(request.tenant_id, "x").tenant_id
        if not request.job_id:
            raise InvalidArgument("job_id must not be empty")
        return _job_message(await self._jobs.get(tenant, request.job_id))

    async def _prepare_job_batch(
        self, tenant_id: str, collection: str, documents: Sequence[JobDocument]
    ) -> _Plan:
        """Split and embed a batch of a job (no lock: the next batch is embedded while the
        previous one is written; a job's documents are distinct)."""
        ref = CollectionRef(tenant_id, collection)
        chunker = self._chunker_for(await self._store.meta(ref))
        messages = [
            retrieval_pb2.Document(id=doc.id, text=doc.text, metadata=to_struct(doc.metadata))
            for doc in documents
        ]
        prepared = await asyncio.to_thread(
            self._prepare, messages, chunker, per_request_limit=False
        )
        return await self._plan(ref, chunker, prepared, create_early=True)

    async def _write_job_batch(self, plan: _Plan) -> int:
        async with self._lock(plan.ref):
            await self._apply(plan, settle=False)
        return sum(result.chunks for result in plan.results)

    async def _settle_job(self, tenant_id: str, collection: str) -> None:
        ref = CollectionRef(tenant_id, collection)
        if await self._store.meta(ref) is not None:
            await self._store.settle(ref)

    # DeleteDocument

    async def DeleteDocument(  # noqa: N802 - gRPC method name
        self, request: retrieval_pb2.DeleteDocumentRequest, context: Context
    ) -> retrieval_pb2.DeleteDocumentResponse:
        ref = validation.collection_ref(request.tenant_id, request.collection)
        doc_id = validation.document_id(request.document_id, "document_id")
        await self._store.require(ref)
        async with self._lock(ref):
            deleted = await self._store.delete_document(ref, doc_id)
            if deleted:
                await self._store.settle(ref)
        if deleted == 0:
            raise NotFound(
                f"document '{validation.shown(doc_id)}' not found in collection '{ref.name}'"
            )
        metrics.CHUNKS_DELETED.inc(deleted)
        return retrieval_pb2.DeleteDocumentResponse(deleted_chunks=deleted)

    # ListDocuments

    async def ListDocuments(  # noqa: N802 - gRPC method name
        self, request: retrieval_pb2.ListDocumentsRequest, context: Context
    ) -> retrieval_pb2.ListDocumentsResponse:
        ref = validation.collection_ref(request.tenant_id, request.collection)
        limit = request.limit or DEFAULT_LIST_LIMIT
        if limit > MAX_LIST_LIMIT:
            raise InvalidArgument(f"limit must be at most {MAX_LIST_LIMIT} (got {limit})")
        await self._store.require(ref)
        documents = await self._store.list_documents(ref, limit)
        return retrieval_pb2.ListDocumentsResponse(
            documents=[
                retrieval_pb2.DocumentInfo(
                    id=doc.document_id,
                    chunks=doc.chunks,
                    metadata=to_struct(doc.metadata),
                )
                for doc in documents
            ]
        )

    # Search

    async def Search(  # noqa: N802 - gRPC method name
        self, request: retrieval_pb2.SearchRequest, context: Context
    ) -> retrieval_pb2.SearchResponse:
        ref = validation.collection_ref(request.tenant_id, request.collection)
        if not request.query.strip():
            raise InvalidArgument("query must not be empty")
        if len(request.query) > MAX_QUERY_CHARS:
            raise InvalidArgument(f"query must be at most {MAX_QUERY_CHARS} characters")
        top_k = request.top_k or DEFAULT_TOP_K
        if top_k > MAX_SEARCH_TOP_K:
            raise InvalidArgument(f"top_k must be between 1 and {MAX_SEARCH_TOP_K} (got {top_k})")
        expr = ""
        if request.HasField("filter"):
            expr = translate_filter(validation.search_filter(request.filter))
        meta = await self._store.require_meta(ref)
        options = self._search_options(request, meta.fusion)
        await self._model_for(ref, meta.dimension)
        reranker = self._reranker_for(request, meta, options)

        started = time.perf_counter()
        vector: Sequence[float] = ()
        if options.mode != "bm25" or options.mmr:
            [vector] = await self._embedder.embed([request.query])
        embedded = time.perf_counter()
        # A reranked search scores more candidates than it returns.
        candidates = max(top_k, self._rerank_candidates) if reranker is not None else top_k
        hits = await self._store.search(
            ref, vector, candidates, expr, query=request.query, options=options
        )
        searched = time.perf_counter()
        metrics.SEARCH_SECONDS.labels("embed").observe(embedded - started)
        metrics.SEARCH_SECONDS.labels("milvus").observe(searched - embedded)
        if reranker is not None and hits:
            hits = await rerank_hits(reranker, request.query, hits, top_k)
            metrics.SEARCH_SECONDS.labels("rerank").observe(time.perf_counter() - searched)
        return retrieval_pb2.SearchResponse(
            chunks=[
                retrieval_pb2.ScoredChunk(
                    document_id=hit.document_id,
                    chunk_id=hit.chunk_id,
                    chunk_index=hit.chunk_index,
                    text=hit.text,
                    score=hit.score,
                    metadata=to_struct(hit.metadata),
                    title=hit.title,
                    section=hit.section,
                )
                for hit in hits
            ],
            query_vector=vector if request.return_query_vector else (),
        )

    def _reranker_for(
        self, request: retrieval_pb2.SearchRequest, meta: CollectionMeta, options: SearchOptions
    ) -> Reranker | None:
        """The reranker of this search: asked for by the request, else by the collection's
        default; None when neither asks (or only the default does and none is configured)."""
        if request.HasField("rerank"):
            if not request.rerank:
                return None
            if self._reranker is None:
                raise FailedPrecondition(
                    "rerank was requested but this retrieval service has no reranker "
                    "configured (AIMESH_RERANKER=none)"
                )
        elif not meta.rerank or self._reranker is None:
            return None
        if options.mmr:
            raise InvalidArgument(
                "mmr and rerank exclude each other: set rerank=false to diversify with mmr"
                + ("" if request.HasField("rerank") else " (the collection reranks by default)")
            )
        return self._reranker

    def _search_options(
        self, request: retrieval_pb2.SearchRequest, default: FusionDefault | None = None
    ) -> SearchOptions:
        """The request's options; a search naming no fusion uses the collection's default
        (``default``) if it has one, else the service's."""
        mode = _MODES.get(request.mode)
        if mode is None:
            raise InvalidArgument(f"mode {request.mode} is not a known search mode")
        fusion = self._fusion
        weight = self._dense_weight
        if request.fusion:
            if request.fusion not in _FUSIONS:
                raise InvalidArgument(f"fusion {request.fusion} is not a known fusion")
            fusion = _FUSIONS[request.fusion]
        elif default is not None:
            fusion = default.fusion
            if default.dense_weight is not None:
                weight = default.dense_weight
        if request.HasField("dense_weight"):
            weight = request.dense_weight
            if not 0.0 <= weight <= 1.0:
                raise InvalidArgument(f"dense_weight must be between 0 and 1 (got {weight:g})")
        mmr_lambda = 0.5
        if request.HasField("mmr_lambda"):
            mmr_lambda = request.mmr_lambda
            if not 0.0 <= mmr_lambda <= 1.0:
                raise InvalidArgument(f"mmr_lambda must be between 0 and 1 (got {mmr_lambda:g})")
        return SearchOptions(
            mode=mode, fusion=fusion, dense_weight=weight, mmr=request.mmr, mmr_lambda=mmr_lambda
        )

    # Collections

    async def CreateCollection(  # noqa: N802 - gRPC method name
        self, request: retrieval_pb2.CreateCollectionRequest, context: Context
    ) -> retrieval_pb2.CollectionInfo:
        ref = validation.collection_ref(request.tenant_id, request.collection)
        chunking = self._default_chunking
        if request.HasField("chunking"):
            given = request.chunking
            chunking = ChunkingConfig(
                chunk_size=given.chunk_size or chunking.chunk_size,
                chunk_overlap=(
                    given.chunk_overlap
                    if given.HasField("chunk_overlap")
                    else chunking.chunk_overlap
                ),
                markdown=given.markdown,
                context=given.context if given.HasField("context") else chunking.context,
            )
            if given.chunk_size and not given.HasField("chunk_overlap"):
                # Keep the default overlap's proportion for a smaller custom size.
                chunking = replace(
                    chunking, chunk_overlap=min(chunking.chunk_overlap, chunking.chunk_size // 4)
                )
            reason = chunking.validate()
            if reason:
                raise InvalidArgument(f"chunking.{reason}")
        index = self._index_settings(request)
        if request.rerank and self._reranker is None:
            raise FailedPrecondition(
                "rerank was requested as the collection's default but this retrieval service "
                "has no reranker configured (AIMESH_RERANKER=none)"
            )
        async with self._lock(ref):
            info = await self._model_for(ref, None)
            meta = await self._store.create(
                ref,
                info.dimension,
                chunking=chunking,
                index=index,
                exist_ok=False,
                rerank=request.rerank,
            )
        log.info("created collection", extra={"collection": ref.name})
        return _collection_info(meta, self._default_chunking)

    def _index_settings(self, request: retrieval_pb2.CreateCollectionRequest) -> IndexConfig:
        default = self._store.default_index()
        if not request.HasField("index"):
            return default
        given = request.index
        kind = given.index_type.upper() or default.index_type
        if kind not in ("FLAT", "HNSW"):
            raise InvalidArgument(
                "index.index_type must be FLAT or HNSW "
                f"(got '{validation.shown(given.index_type)}')"
            )
        if kind == "HNSW" and not self._store.is_server:
            raise InvalidArgument("index.index_type HNSW needs a Milvus server; Lite has FLAT only")
        m = given.hnsw_m or default.hnsw_m
        ef = given.hnsw_ef_construction or default.hnsw_ef_construction
        if not 4 <= m <= 64:
            raise InvalidArgument(f"index.hnsw_m must be between 4 and 64 (got {m})")
        if not 8 <= ef <= 512:
            raise InvalidArgument(
                f"index.hnsw_ef_construction must be between 8 and 512 (got {ef})"
            )
        return IndexConfig("HNSW" if kind == "HNSW" else "FLAT", m, ef)

    async def ListCollections(  # noqa: N802 - gRPC method name
        self, request: retrieval_pb2.ListCollectionsRequest, context: Context
    ) -> retrieval_pb2.ListCollectionsResponse:
        tenant = validation.collection_ref(request.tenant_id, "x").tenant_id
        metas = await self._store.list_collections(tenant)
        return retrieval_pb2.ListCollectionsResponse(
            collections=[_collection_info(meta, self._default_chunking) for meta in metas]
        )

    async def UpdateCollectionSettings(  # noqa: N802 - gRPC method name
        self, request: retrieval_pb2.UpdateCollectionSettingsRequest, context: Context
    ) -> retrieval_pb2.CollectionInfo:
        ref = validation.collection_ref(request.tenant_id, request.collection)
        fusion: FusionDefault | None = None
        if request.clear_fusion:
            if request.HasField("fusion"):
                raise InvalidArgument("give either fusion or clear_fusion, not both")
        elif not request.HasField("fusion"):
            raise InvalidArgument("nothing to update: give fusion or clear_fusion")
        else:
            fusion = _fusion_default(request.fusion)
        async with self._lock(ref):
            meta = await self._store.set_fusion(ref, fusion)
        log.info("updated collection settings", extra={"collection": ref.name})
        return _collection_info(meta, self._default_chunking)

    async def DeleteCollection(  # noqa: N802 - gRPC method name
        self, request: retrieval_pb2.DeleteCollectionRequest, context: Context
    ) -> retrieval_pb2.DeleteCollectionResponse:
        ref = validation.collection_ref(request.tenant_id, request.collection)
        async with self._lock(ref):
            await self._store.drop(ref)
        log.info("deleted collection", extra={"collection": ref.name})
        return retrieval_pb2.DeleteCollectionResponse()


_JOB_STATES = {
    QUEUED: retrieval_pb2.JOB_STATE_QUEUED,
    RUNNING: retrieval_pb2.JOB_STATE_RUNNING,
    SUCCEEDED: retrieval_pb2.JOB_STATE_SUCCEEDED,
    FAILED: retrieval_pb2.JOB_STATE_FAILED,
}


def _job_message(job: Job) -> retrieval_pb2.IngestJob:
    return retrieval_pb2.IngestJob(
        id=job.id,
        collection=job.collection,
        state=_JOB_STATES.get(job.state, retrieval_pb2.JOB_STATE_UNSPECIFIED),
        documents_total=job.documents_total,
        documents_done=job.documents_done,
        chunks_total=job.chunks_total,
        chunks_embedded=job.chunks_embedded,
        errors=job.errors,
        created_at=job.created_at.isoformat().replace("+00:00", "Z"),
        updated_at=job.updated_at.isoformat().replace("+00:00", "Z"),
    )


def chunk_contexts(
    text: str, chunks: list[str], metadata: dict[str, Any], config: ChunkingConfig
) -> list[RowContext] | None:
    """Each chunk's context in a collection with chunk context (else None): the document's
    ``title`` from its metadata, and the Markdown heading path at the chunk's start when the
    collection splits Markdown or the document's ``type`` is one whose text carries
    Markdown headings (the gateway writes HTML, DOCX and PDF headings as such)."""
    if not config.context:
        return None
    title = metadata.get("title")
    title = " ".join(title.split())[:MAX_TITLE_CHARS] if isinstance(title, str) else ""
    if config.markdown or metadata.get("type") in HEADING_TYPES:
        paths = sections(text, chunks, title=title)
    else:
        paths = [""] * len(chunks)
    headers: dict[str, str] = {}
    contexts: list[RowContext] = []
    for path in paths:
        if path not in headers:
            headers[path] = ChunkContext(title, path).header(config.context_tokens)
        contexts.append(RowContext(title, path, headers[path]))
    return contexts


def _fusion_default(given: retrieval_pb2.FusionSettings) -> FusionDefault:
    kind = _FUSIONS.get(given.fusion)
    if kind is None:
        raise InvalidArgument(f"fusion.fusion {given.fusion} is not a known fusion")
    weight: float | None = None
    if given.HasField("dense_weight"):
        weight = given.dense_weight
        if not 0.0 <= weight <= 1.0:
            raise InvalidArgument(f"fusion.dense_weight must be between 0 and 1 (got {weight:g})")
        if kind != "weighted":
            raise InvalidArgument("fusion.dense_weight applies to weighted fusion only")
    return FusionDefault(kind, weight)


_FUSION_ENUMS: dict[FusionKind, retrieval_pb2.Fusion.ValueType] = {
    "adaptive": retrieval_pb2.FUSION_ADAPTIVE,
    "rrf": retrieval_pb2.FUSION_RRF,
    "weighted": retrieval_pb2.FUSION_WEIGHTED,
}


def _collection_info(meta: CollectionMeta, default: ChunkingConfig) -> retrieval_pb2.CollectionInfo:
    chunking = meta.chunking or default
    fusion = (
        retrieval_pb2.FusionSettings(
            fusion=_FUSION_ENUMS[meta.fusion.fusion], dense_weight=meta.fusion.dense_weight
        )
        if meta.fusion
        else None
    )
    return retrieval_pb2.CollectionInfo(
        fusion=fusion,
        name=meta.name,
        chunking=retrieval_pb2.ChunkingSettings(
            chunk_size=chunking.chunk_size,
            chunk_overlap=chunking.chunk_overlap,
            markdown=chunking.markdown,
            context=meta.context,
        ),
        index=retrieval_pb2.IndexSettings(
            index_type=meta.index.index_type,
            hnsw_m=meta.index.hnsw_m if meta.index.index_type == "HNSW" else 0,
            hnsw_ef_construction=(
                meta.index.hnsw_ef_construction if meta.index.index_type == "HNSW" else 0
            ),
        ),
        full_text=meta.full_text,
        dimension=meta.dimension,
        rerank=meta.rerank,
    )
