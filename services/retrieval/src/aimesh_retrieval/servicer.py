"""The RetrievalService gRPC servicer: validation, chunking, embedding, storage, search."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from aimesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from aimesh_common.errors import FailedPrecondition, InvalidArgument, NotFound
from aimesh_retrieval import metrics, validation
from aimesh_retrieval.chunking import Chunker
from aimesh_retrieval.embedder import EmbeddingClient, ModelInfo
from aimesh_retrieval.filters import translate_filter
from aimesh_retrieval.store import ChunkRow, CollectionRef, MilvusStore

log = logging.getLogger("aimesh.retrieval")

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_TOP_K = 5
MAX_TOP_K = 100
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
MAX_QUERY_CHARS = 8192


@dataclass(frozen=True)
class _Prepared:
    """A validated document, split into chunks; ``fingerprint`` feeds the content hash."""

    id: str
    chunks: list[str]
    metadata: dict[str, Any]
    fingerprint: bytes


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
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._chunker = chunker
        self._max_documents = max_documents_per_request
        self._max_chars = max_document_chars
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, ref: CollectionRef) -> asyncio.Lock:
        return self._locks.setdefault(ref.physical, asyncio.Lock())

    async def _model_for(self, ref: CollectionRef, stored_dim: int | None) -> ModelInfo:
        info = await self._embedder.info()
        if stored_dim is not None and stored_dim != info.dimension:
            raise FailedPrecondition(
                f"collection '{ref.name}' holds {stored_dim}-dimensional vectors but the "
                f"embedding model {info.model!r} produces {info.dimension}; re-index it"
            )
        return info

    # UpsertDocuments

    def _prepare(self, documents: Sequence[retrieval_pb2.Document]) -> list[_Prepared]:
        """Validate and chunk the documents (CPU work, run off the event loop)."""
        if not documents:
            raise InvalidArgument("documents must not be empty")
        if len(documents) > self._max_documents:
            raise InvalidArgument(
                f"documents has {len(documents)} items; at most {self._max_documents} "
                "are allowed per request"
            )
        seen: set[str] = set()
        prepared: list[_Prepared] = []
        for i, document in enumerate(documents):
            field = f"documents[{i}]"
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
            chunks = self._chunker.split(document.text)
            fingerprint = json.dumps(
                {
                    "text": document.text,
                    "metadata": meta,
                    # Re-chunk when the chunking settings change.
                    "chunking": [self._chunker.chunk_size, self._chunker.chunk_overlap],
                },
                sort_keys=True,
                ensure_ascii=False,
            ).encode()
            prepared.append(_Prepared(doc_id, chunks, meta, fingerprint))
        return prepared

    async def UpsertDocuments(  # noqa: N802 - gRPC method name
        self, request: retrieval_pb2.UpsertDocumentsRequest, context: Context
    ) -> retrieval_pb2.UpsertDocumentsResponse:
        ref = validation.collection_ref(request.tenant_id, request.collection)
        documents = await asyncio.to_thread(self._prepare, request.documents)
        async with self._lock(ref):
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
                # The model is part of the hash: after a model change, the next upsert of
                # a document re-embeds it instead of keeping vectors of the old model.
                content_hash = hashlib.sha256(
                    info.model.encode() + b"\0" + doc.fingerprint
                ).hexdigest()
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
            if changed:
                # Embed everything before writing anything: an embedding failure leaves
                # the collection exactly as it was (and does not create it).
                texts = [chunk for doc, _ in changed for chunk in doc.chunks]
                vectors = iter(await self._embedder.embed(texts))
                rows = [
                    ChunkRow(
                        document_id=doc.id,
                        chunk_index=index,
                        chunk_count=len(doc.chunks),
                        text=chunk,
                        content_hash=content_hash,
                        metadata=doc.metadata,
                        embedding=next(vectors),
                    )
                    for doc, content_hash in changed
                    for index, chunk in enumerate(doc.chunks)
                ]
                if stored_dim is None:
                    await self._store.create(ref, info.dimension)
                await self._store.write(ref, rows)
                metrics.CHUNKS_UPSERTED.inc(len(rows))
        for result in results:
            outcome = "replaced" if result.replaced else "created"
            if result.id in stored and not result.replaced:
                outcome = "unchanged"
            metrics.DOCUMENTS_UPSERTED.labels(outcome).inc()
        log.info(
            "upserted documents",
            extra={
                "collection": ref.name,
                "documents": len(documents),
                "changed": len(changed),
            },
        )
        return retrieval_pb2.UpsertDocumentsResponse(results=results)

    # DeleteDocument

    async def DeleteDocument(  # noqa: N802 - gRPC method name
        self, request: retrieval_pb2.DeleteDocumentRequest, context: Context
    ) -> retrieval_pb2.DeleteDocumentResponse:
        ref = validation.collection_ref(request.tenant_id, request.collection)
        doc_id = validation.document_id(request.document_id, "document_id")
        await self._store.require(ref)
        async with self._lock(ref):
            deleted = await self._store.delete_document(ref, doc_id)
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
                    metadata=validation.dict_to_struct(doc.metadata),
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
        if top_k > MAX_TOP_K:
            raise InvalidArgument(f"top_k must be between 1 and {MAX_TOP_K} (got {top_k})")
        expr = ""
        if request.HasField("filter"):
            expr = translate_filter(validation.struct_to_dict(request.filter))
        stored_dim = await self._store.require(ref)
        await self._model_for(ref, stored_dim)

        started = time.perf_counter()
        [vector] = await self._embedder.embed([request.query])
        embedded = time.perf_counter()
        hits = await self._store.search(ref, vector, top_k, expr)
        metrics.SEARCH_SECONDS.labels("embed").observe(embedded - started)
        metrics.SEARCH_SECONDS.labels("milvus").observe(time.perf_counter() - embedded)
        return retrieval_pb2.SearchResponse(
            chunks=[
                retrieval_pb2.ScoredChunk(
                    document_id=hit.document_id,
                    chunk_id=hit.chunk_id,
                    chunk_index=hit.chunk_index,
                    text=hit.text,
                    score=hit.score,
                    metadata=validation.dict_to_struct(hit.metadata),
                )
                for hit in hits
            ]
        )
