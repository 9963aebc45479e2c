"""OpenAI's vector-store API (``client.vector_stores.*``) over aimesh collections.

**A vector store is a collection; its id is the collection's name.** ``POST
/v1/vector_stores`` creates a collection named ``vs_<32 hex>`` (OpenAI's display name is
free text, which a collection name cannot hold) and keeps the display name, description and
metadata in the gateway's database; every other collection of the tenant is listed too, its
name as id and display name. So ``vs.id`` goes straight into ``file_search.vector_store_ids``
of ``POST /v1/responses``, and a native collection name works there as before.

Adding a file (``POST /v1/vector_stores/{id}/files`` with a ``file_id`` of ``POST
/v1/files``) parses its stored bytes as the native upload does and starts an ingestion job
of the retrieval service; the vector-store file's ``status`` follows the job (queued and
running: ``in_progress``; succeeded: ``completed``; failed: ``failed`` with ``last_error``),
read from the job whenever a file or a store is read while it is in progress. A file that
cannot be parsed is ``failed`` at once (``unsupported_file`` / ``invalid_file``). Its
documents are ``<file_id>`` (``<file_id>#<n>`` when a long file is split), with the file's
id, name and ``attributes`` in their metadata, so ``file_search`` citations name the file.

Batches add up to :data:`MAX_FILE_IDS` files at once. Not served, each with a 4xx that says
so: ``expires_after``, a static chunking above the embedding model's window, a per-file
chunking other than the collection's, changing a file's attributes, reading a file's parsed
content, cancelling a batch (jobs run to the end) and search query rewriting or rankers.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import grpc
from fastapi import APIRouter, HTTPException, Path, Query, Response

from aimesh.retrieval.v1 import retrieval_pb2
from aimesh_common.structs import from_struct, to_struct
from aimesh_gateway.api.deps import (
    API_PREFIX,
    EditorPrincipal,
    FileStoreDep,
    Upstream,
    UpstreamDep,
    UserPrincipal,
    VectorStoresDep,
)
from aimesh_gateway.api.routes.files import file_not_found
from aimesh_gateway.api.routes.jobs import (
    MAX_DOCUMENT_CHARS,
    MAX_FILE_BYTES,
    job_state,
    submit_documents,
)
from aimesh_gateway.auth.security import Principal
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.db.models import VectorStore, VectorStoreFile
from aimesh_gateway.parsing import FileRejected, ParsedDocument, parse_file
from aimesh_gateway.schemas.collections import MAX_CHUNK_TOKENS
from aimesh_gateway.schemas.common import score
from aimesh_gateway.schemas.problem import COMMON_ERRORS, problem_doc
from aimesh_gateway.schemas.vector_stores import (
    MAX_FILE_IDS,
    OBJECT_ID_PATTERN,
    ChunkingStrategy,
    ChunkingStrategyOut,
    CreateFileBatchRequest,
    CreateVectorStoreFileRequest,
    CreateVectorStoreRequest,
    FileBatchObject,
    FileCounts,
    LastError,
    SearchVectorStoreRequest,
    StaticChunkingOut,
    UpdateVectorStoreRequest,
    VectorStoreDeleted,
    VectorStoreFileDeleted,
    VectorStoreFileList,
    VectorStoreFileObject,
    VectorStoreList,
    VectorStoreObject,
    VectorStoreSearchContent,
    VectorStoreSearchPage,
    VectorStoreSearchResult,
)
from aimesh_gateway.stores.files import UnknownCursor
from aimesh_gateway.stores.vector_stores import (
    Outcome,
    VectorStoreRecords,
    attributes_of,
    document_ids_of,
    metadata_of,
)

router = APIRouter(
    prefix=f"{API_PREFIX}/vector_stores", tags=["openai"], route_class=CheckedJSONRoute
)

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem_doc("No vector store (collection), file or batch of that id in the tenant.")
}
CONFLICT: dict[int | str, dict[str, Any]] = {409: problem_doc("The file is still being ingested.")}
# Jobs read per request to bring in-progress files up to date (the rest on a later read).
MAX_JOBS_READ = 64
# What the SDK's polling helpers wait between reads of an in-progress file or batch.
POLL_AFTER_MS = "500"

VectorStoreIdPath = Annotated[
    str,
    Path(
        pattern=OBJECT_ID_PATTERN,
        description="A vector store's id: the collection's name.",
        examples=["vs_3f2a9c0d6b1e4f5a8c7d9e0f1a2b3c4d"],
    ),
]
FileIdPath = Annotated[
    str, Path(pattern=OBJECT_ID_PATTERN, description="A file's id.", examples=["file-3f2a9c0d"])
]
BatchIdPath = Annotated[
    str, Path(pattern=OBJECT_ID_PATTERN, description="A batch's id.", examples=["vsfb_3f2a9c0d"])
]
Limit = Annotated[int, Query(ge=1, le=100, description="Most objects to return.")]
OrderQuery = Annotated[
    Literal["asc", "desc"], Query(description="By creation time; desc: newest first.")
]
Cursor = Annotated[str | None, Query(max_length=64, description="An object id of the list.")]
StatusFilter = Annotated[
    Literal["in_progress", "completed", "failed", "cancelled"] | None,
    Query(description="Only files of this status."),
]


def _refuse(detail: str) -> HTTPException:
    return HTTPException(400, detail)


# ---------------------------------------------------------------- collections


async def _collections(
    upstream: Upstream, tenant_id: str
) -> dict[str, retrieval_pb2.CollectionInfo]:
    reply = await upstream.retrieval.ListCollections(
        retrieval_pb2.ListCollectionsRequest(tenant_id=tenant_id),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    return {info.name: info for info in reply.collections}


async def _collection(
    upstream: Upstream, tenant_id: str, vector_store_id: str
) -> retrieval_pb2.CollectionInfo:
    """The vector store's collection; 404 when the tenant has none of that name."""
    info = (await _collections(upstream, tenant_id)).get(vector_store_id)
    if info is None:
        raise HTTPException(404, f"vector store {vector_store_id!r} does not exist")
    return info


def _chunking(info: retrieval_pb2.CollectionInfo) -> ChunkingStrategyOut:
    return ChunkingStrategyOut(
        static=StaticChunkingOut(
            max_chunk_size_tokens=info.chunking.chunk_size,
            chunk_overlap_tokens=info.chunking.chunk_overlap,
        )
    )


def _check_file_chunking(
    given: ChunkingStrategy | None, info: retrieval_pb2.CollectionInfo, where: str
) -> None:
    """A file is chunked as its collection chunks every file: "auto", or a static strategy
    equal to the collection's, is accepted; another is a 400 naming ``where``."""
    if given is None or given.static is None:
        return
    have = (info.chunking.chunk_size, info.chunking.chunk_overlap)
    if (given.static.max_chunk_size_tokens, given.static.chunk_overlap_tokens) != have:
        raise _refuse(
            f"{where}: the vector store chunks every file with {have[0]} tokens per chunk and "
            f"{have[1]} of overlap; per-file chunking is not supported (give auto or that)"
        )


# ---------------------------------------------------------------- files of a store


def _outcome(job: retrieval_pb2.IngestJob) -> Outcome:
    state = job_state(job)
    if state == "succeeded":
        return Outcome("completed")
    if state == "failed":
        return Outcome(
            "failed", "server_error", "; ".join(job.errors) or "the ingestion job failed"
        )
    return Outcome("in_progress")


async def _refresh(
    upstream: Upstream, records: VectorStoreRecords, rows: Sequence[VectorStoreFile]
) -> None:
    """Bring in-progress files up to date with their jobs (at most :data:`MAX_JOBS_READ`)."""

    async def one(row: VectorStoreFile) -> None:
        try:
            job = await upstream.retrieval.GetIngestJob(
                retrieval_pb2.GetIngestJobRequest(tenant_id=row.tenant_id, job_id=row.job_id),
                timeout=upstream.timeout,
                metadata=upstream.metadata,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            outcome = Outcome(
                "failed", "server_error", "the ingestion job is no longer known; add the file again"
            )
        else:
            outcome = _outcome(job)
        if outcome.status != row.status:
            await records.settle(row, outcome)

    pending = [row for row in rows if row.status == "in_progress" and row.job_id]
    await asyncio.gather(*(one(row) for row in pending[:MAX_JOBS_READ]))


def _file_object(row: VectorStoreFile, info: retrieval_pb2.CollectionInfo) -> VectorStoreFileObject:
    last_error = None
    if row.status == "failed":
        last_error = LastError.model_validate(
            {"code": row.error_code or "server_error", "message": row.error_message}
        )
    return VectorStoreFileObject.model_validate(
        {
            "id": row.file_id,
            "created_at": int(row.created_at.timestamp()),
            "vector_store_id": row.vector_store_id,
            "status": row.status,
            "last_error": last_error,
            "usage_bytes": row.usage_bytes,
            "attributes": attributes_of(row),
            "chunking_strategy": _chunking(info),
        }
    )


def _documents(
    file_id: str, filename: str, parsed: list[ParsedDocument], attributes: dict[str, Any]
) -> list[ParsedDocument]:
    """The file's documents as stored: ids from the file id, its id, name and attributes in
    their metadata (file_search citations read ``file_id`` and ``filename`` there)."""
    named = [file_id] if len(parsed) == 1 else [f"{file_id}#{n + 1}" for n in range(len(parsed))]
    return [
        ParsedDocument(
            doc_id,
            document.text,
            {**document.metadata, **attributes, "file_id": file_id, "filename": filename},
        )
        for doc_id, document in zip(named, parsed, strict=True)
    ]


async def _add_file(
    upstream: Upstream,
    files: FileStoreDep,
    records: VectorStoreRecords,
    principal: Principal,
    vector_store_id: str,
    file_id: str,
    attributes: dict[str, Any] | None,
    batch_id: str = "",
) -> VectorStoreFile:
    """Add a stored file to the vector store: parse it and start its ingestion job. A file
    there already is returned as it is (or re-tagged for ``batch_id``) unless it failed."""
    tenant_id = principal.tenant_id
    stored = await files.get(tenant_id, file_id)
    if stored is None:
        raise file_not_found(file_id)
    existing = await records.file(tenant_id, vector_store_id, file_id)
    if existing is not None and existing.status in ("in_progress", "completed"):
        if batch_id:
            await records.tag(existing, batch_id)
        return existing
    content = await files.content(tenant_id, file_id)
    if content is None:  # deleted meanwhile
        raise file_not_found(file_id)
    try:
        parsed = await asyncio.to_thread(
            parse_file,
            io.BytesIO(content),
            stored.filename,
            len(content),
            max_bytes=MAX_FILE_BYTES,
            max_chars=MAX_DOCUMENT_CHARS,
        )
    except FileRejected as rejected:
        code = "unsupported_file" if rejected.status == 415 else "invalid_file"
        return await records.attach(
            tenant_id,
            vector_store_id,
            file_id,
            job_id="",
            outcome=Outcome("failed", code, str(rejected)),
            usage_bytes=0,
            attributes=attributes or {},
            document_ids=[],
            batch_id=batch_id,
        )
    documents = _documents(file_id, stored.filename, parsed, attributes or {})
    job = await submit_documents(upstream, tenant_id, vector_store_id, documents)
    return await records.attach(
        tenant_id,
        vector_store_id,
        file_id,
        job_id=job.id,
        outcome=_outcome(job),
        usage_bytes=sum(len(document.text.encode()) for document in documents),
        attributes=attributes or {},
        document_ids=[document.id for document in documents],
        batch_id=batch_id,
    )


# ---------------------------------------------------------------- vector stores


def _counts(statuses: Counter[str]) -> FileCounts:
    return FileCounts(
        in_progress=statuses["in_progress"],
        completed=statuses["completed"],
        failed=statuses["failed"],
        cancelled=statuses["cancelled"],
        total=sum(statuses.values()),
    )


def _store_object(
    vector_store_id: str, row: VectorStore | None, counted: tuple[Counter[str], int] | None
) -> VectorStoreObject:
    statuses, usage = counted or (Counter(), 0)
    return VectorStoreObject(
        id=vector_store_id,
        created_at=int(row.created_at.timestamp()) if row is not None else 0,
        name=row.name if row is not None else vector_store_id,
        description=(row.description or None) if row is not None else None,
        usage_bytes=usage,
        file_counts=_counts(statuses),
        status="in_progress" if statuses["in_progress"] else "completed",
        metadata=metadata_of(row),
    )


async def _described(
    upstream: Upstream, records: VectorStoreRecords, tenant_id: str, ids: Sequence[str]
) -> list[VectorStoreObject]:
    """The vector-store objects of these collections, their files' jobs read first."""
    await _refresh(upstream, records, await records.pending(tenant_id, ids, MAX_JOBS_READ))
    rows = await records.of(tenant_id, ids)
    counts = await records.counts(tenant_id, ids)
    return [_store_object(vs_id, rows.get(vs_id), counts.get(vs_id)) for vs_id in ids]


@router.post(
    "",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Create a vector store: a new collection (OpenAI API; role editor)",
)
async def create_vector_store(
    body: CreateVectorStoreRequest,
    principal: EditorPrincipal,
    upstream: UpstreamDep,
    files: FileStoreDep,
    records: VectorStoresDep,
) -> VectorStoreObject:
    """Create a collection ``vs_<hex>`` (its id) and add the ``file_ids`` to it. A
    ``static`` chunking strategy becomes the collection's chunking."""
    if body.expires_after is not None:
        raise _refuse("expires_after: vector stores do not expire here; delete them")
    request = retrieval_pb2.CreateCollectionRequest(
        tenant_id=principal.tenant_id, collection=f"vs_{uuid.uuid4().hex}"
    )
    static = body.chunking_strategy.static if body.chunking_strategy is not None else None
    if static is not None:
        if static.max_chunk_size_tokens > MAX_CHUNK_TOKENS:
            raise _refuse(
                "chunking_strategy.static.max_chunk_size_tokens: at most "
                f"{MAX_CHUNK_TOKENS} (the embedding model's window) is supported"
            )
        request.chunking.CopyFrom(
            retrieval_pb2.ChunkingSettings(
                chunk_size=static.max_chunk_size_tokens,
                chunk_overlap=static.chunk_overlap_tokens,
            )
        )
    for index, file_id in enumerate(body.file_ids or ()):
        if await files.get(principal.tenant_id, file_id) is None:
            raise HTTPException(404, f"file_ids[{index}]: file {file_id!r} does not exist")
    info = await upstream.retrieval.CreateCollection(
        request, timeout=upstream.timeout, metadata=upstream.metadata
    )
    await records.create(
        principal.tenant_id,
        info.name,
        name=body.name or "",
        description=body.description or "",
        metadata=body.metadata or {},
    )
    for file_id in body.file_ids or ():
        await _add_file(upstream, files, records, principal, info.name, file_id, None)
    [described] = await _described(upstream, records, principal.tenant_id, [info.name])
    return described


@router.get("", responses=COMMON_ERRORS, summary="List vector stores (the tenant's collections)")
async def list_vector_stores(
    principal: UserPrincipal,
    upstream: UpstreamDep,
    records: VectorStoresDep,
    limit: Limit = 20,
    order: OrderQuery = "desc",
    after: Cursor = None,
    before: Cursor = None,
) -> VectorStoreList:
    """Every collection of the tenant, as a vector store, by creation time (collections
    not created through this API count as created at 0, then by name)."""
    names = list(await _collections(upstream, principal.tenant_id))
    rows = await records.of(principal.tenant_id, names)

    def created(name: str) -> tuple[float, str]:
        row = rows.get(name)
        return (row.created_at.timestamp() if row is not None else 0.0, name)

    names.sort(key=created, reverse=order == "desc")
    for name, cursor in (("after", after), ("before", before)):
        if cursor is not None and cursor not in names:
            raise _refuse(f"{name}: no vector store {cursor!r} in the list")
    start = names.index(after) + 1 if after is not None else 0
    end = names.index(before) if before is not None else len(names)
    window = names[start:end]
    page = window[-limit:] if before is not None and after is None else window[:limit]
    more = len(window) > limit
    data = await _described(upstream, records, principal.tenant_id, page)
    return VectorStoreList(
        data=data,
        first_id=page[0] if page else None,
        last_id=page[-1] if page else None,
        has_more=more,
    )


@router.get(
    "/{vector_store_id}",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="A vector store",
)
async def retrieve_vector_store(
    vector_store_id: VectorStoreIdPath,
    principal: UserPrincipal,
    upstream: UpstreamDep,
    records: VectorStoresDep,
) -> VectorStoreObject:
    await _collection(upstream, principal.tenant_id, vector_store_id)
    [described] = await _described(upstream, records, principal.tenant_id, [vector_store_id])
    return described


@router.post(
    "/{vector_store_id}",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Rename a vector store or change its metadata (role editor)",
)
async def update_vector_store(
    vector_store_id: VectorStoreIdPath,
    body: UpdateVectorStoreRequest,
    principal: EditorPrincipal,
    upstream: UpstreamDep,
    records: VectorStoresDep,
) -> VectorStoreObject:
    await _collection(upstream, principal.tenant_id, vector_store_id)
    if body.expires_after is not None:
        raise _refuse("expires_after: vector stores do not expire here; delete them")
    await records.update(
        principal.tenant_id, vector_store_id, name=body.name, metadata=body.metadata
    )
    [described] = await _described(upstream, records, principal.tenant_id, [vector_store_id])
    return described


@router.delete(
    "/{vector_store_id}",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Delete a vector store: its collection and every document in it (role editor)",
)
async def delete_vector_store(
    vector_store_id: VectorStoreIdPath,
    principal: EditorPrincipal,
    upstream: UpstreamDep,
    records: VectorStoresDep,
) -> VectorStoreDeleted:
    """Drop the collection; the uploaded files stay (``DELETE /v1/files/{id}``)."""
    await _collection(upstream, principal.tenant_id, vector_store_id)
    await upstream.retrieval.DeleteCollection(
        retrieval_pb2.DeleteCollectionRequest(
            tenant_id=principal.tenant_id, collection=vector_store_id
        ),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    await records.forget(principal.tenant_id, vector_store_id)
    return VectorStoreDeleted(id=vector_store_id)


@router.post(
    "/{vector_store_id}/search",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Search a vector store (role user)",
)
async def search_vector_store(
    vector_store_id: VectorStoreIdPath,
    body: SearchVectorStoreRequest,
    principal: UserPrincipal,
    upstream: UpstreamDep,
) -> VectorStoreSearchPage:
    """The collection's best chunks for the query (hybrid when the collection has full-text
    search, with its fusion and rerank defaults), as OpenAI's search results."""
    info = await _collection(upstream, principal.tenant_id, vector_store_id)
    if body.rewrite_query:
        raise _refuse("rewrite_query: query rewriting is not supported")
    threshold = _score_threshold(body.ranking_options)
    queries = [body.query] if isinstance(body.query, str) else list(body.query)
    query = " ".join(text.strip() for text in queries if text.strip())
    if not query:
        raise HTTPException(422, "query: give a non-blank query")
    request = retrieval_pb2.SearchRequest(
        tenant_id=principal.tenant_id,
        collection=vector_store_id,
        query=query,
        top_k=body.max_num_results,
        filter=to_struct(_filter(body.filters, "filters")) if body.filters is not None else None,
        mode=retrieval_pb2.SEARCH_MODE_HYBRID
        if info.full_text
        else retrieval_pb2.SEARCH_MODE_DENSE,
    )
    reply = await upstream.retrieval.Search(
        request, timeout=upstream.timeout, metadata=upstream.metadata
    )
    data = []
    for chunk in reply.chunks:
        if threshold is not None and chunk.score < threshold:
            continue
        metadata = from_struct(chunk.metadata)
        file_id = metadata.get("file_id")
        filename = metadata.get("filename")
        data.append(
            VectorStoreSearchResult(
                file_id=file_id if isinstance(file_id, str) else chunk.document_id,
                filename=filename
                if isinstance(filename, str)
                else chunk.title or chunk.document_id,
                score=score(chunk.score),
                attributes={
                    key: value
                    for key, value in metadata.items()
                    if isinstance(value, str | int | float | bool)
                },
                content=[VectorStoreSearchContent(text=chunk.text)],
            )
        )
    return VectorStoreSearchPage(search_query=queries, data=data)


def _score_threshold(options: dict[str, Any] | None) -> float | None:
    if not options:
        return None
    unknown = sorted(set(options) - {"ranker", "score_threshold"})
    if unknown:
        raise _refuse(f"ranking_options.{unknown[0]}: not supported")
    if options.get("ranker") not in (None, "auto"):
        raise _refuse('ranking_options.ranker: only "auto" (the collection\'s own) is supported')
    threshold = options.get("score_threshold")
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise HTTPException(422, "ranking_options.score_threshold: give a number")
    return float(threshold)


_COMPARISONS = {
    "eq": "$eq",
    "ne": "$ne",
    "gt": "$gt",
    "gte": "$gte",
    "lt": "$lt",
    "lte": "$lte",
    "in": "$in",
}


def _filter(given: Any, where: str) -> dict[str, Any]:
    """OpenAI's attribute filter in aimesh's filter language (400 naming what cannot be)."""
    if not isinstance(given, dict):
        raise HTTPException(422, f"{where}: a filter is an object")
    kind = given.get("type")
    if kind in ("and", "or"):
        parts = given.get("filters")
        if not isinstance(parts, list) or not parts:
            raise HTTPException(422, f"{where}.filters: give a non-empty list of filters")
        return {
            f"${kind}": [_filter(part, f"{where}.filters[{n}]") for n, part in enumerate(parts)]
        }
    if kind not in _COMPARISONS:
        raise _refuse(f"{where}.type {kind!r} is not supported")
    key = given.get("key")
    if not isinstance(key, str) or not key:
        raise HTTPException(422, f"{where}.key: give the attribute's name")
    if "value" not in given:
        raise HTTPException(422, f"{where}.value: give the value to compare with")
    if kind == "eq":  # aimesh's plain form of equality
        return {key: given["value"]}
    return {key: {_COMPARISONS[kind]: given["value"]}}


# ---------------------------------------------------------------- files of a store


@router.post(
    "/{vector_store_id}/files",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Add a file to a vector store: an ingestion job (role editor)",
)
async def create_vector_store_file(
    vector_store_id: VectorStoreIdPath,
    body: CreateVectorStoreFileRequest,
    principal: EditorPrincipal,
    upstream: UpstreamDep,
    files: FileStoreDep,
    records: VectorStoresDep,
) -> VectorStoreFileObject:
    """Parse the file and start the job that chunks, embeds and stores it; ``status`` is
    ``in_progress`` until the job ends (poll ``GET .../files/{file_id}``)."""
    info = await _collection(upstream, principal.tenant_id, vector_store_id)
    _check_file_chunking(body.chunking_strategy, info, "chunking_strategy")
    row = await _add_file(
        upstream, files, records, principal, vector_store_id, body.file_id, body.attributes
    )
    return _file_object(row, info)


@router.get(
    "/{vector_store_id}/files",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="List the files of a vector store",
)
async def list_vector_store_files(
    vector_store_id: VectorStoreIdPath,
    principal: UserPrincipal,
    upstream: UpstreamDep,
    records: VectorStoresDep,
    limit: Limit = 20,
    order: OrderQuery = "desc",
    after: Cursor = None,
    before: Cursor = None,
    filter: StatusFilter = None,
) -> VectorStoreFileList:
    info = await _collection(upstream, principal.tenant_id, vector_store_id)
    return await _file_list(
        upstream,
        records,
        principal.tenant_id,
        vector_store_id,
        info,
        status=filter,
        batch_id=None,
        limit=limit,
        order=order,
        after=after,
        before=before,
    )


async def _file_list(
    upstream: Upstream,
    records: VectorStoreRecords,
    tenant_id: str,
    vector_store_id: str,
    info: retrieval_pb2.CollectionInfo,
    *,
    status: str | None,
    batch_id: str | None,
    limit: int,
    order: Literal["asc", "desc"],
    after: str | None,
    before: str | None,
) -> VectorStoreFileList:
    await _refresh(
        upstream, records, await records.pending(tenant_id, [vector_store_id], MAX_JOBS_READ)
    )
    try:
        rows, more = await records.files_page(
            tenant_id,
            vector_store_id,
            status=status,
            batch_id=batch_id,
            order=order,
            after=after,
            before=before,
            limit=limit,
        )
    except UnknownCursor as unknown:
        raise _refuse(f"no file {str(unknown)!r} in this list to page from") from None
    data = [_file_object(row, info) for row in rows]
    return VectorStoreFileList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=more,
    )


async def _stored_file(
    records: VectorStoreRecords, tenant_id: str, vector_store_id: str, file_id: str
) -> VectorStoreFile:
    row = await records.file(tenant_id, vector_store_id, file_id)
    if row is None:
        raise HTTPException(404, f"file {file_id!r} is not in vector store {vector_store_id!r}")
    return row


@router.get(
    "/{vector_store_id}/files/{file_id}",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="A file of a vector store, with its ingestion status",
)
async def retrieve_vector_store_file(
    vector_store_id: VectorStoreIdPath,
    file_id: FileIdPath,
    principal: UserPrincipal,
    upstream: UpstreamDep,
    records: VectorStoresDep,
    response: Response,
) -> VectorStoreFileObject:
    info = await _collection(upstream, principal.tenant_id, vector_store_id)
    row = await _stored_file(records, principal.tenant_id, vector_store_id, file_id)
    await _refresh(upstream, records, [row])
    if row.status == "in_progress":
        response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return _file_object(row, info)


@router.delete(
    "/{vector_store_id}/files/{file_id}",
    responses={**COMMON_ERRORS, **NOT_FOUND, **CONFLICT},
    summary="Remove a file from a vector store: its documents (role editor)",
)
async def delete_vector_store_file(
    vector_store_id: VectorStoreIdPath,
    file_id: FileIdPath,
    principal: EditorPrincipal,
    upstream: UpstreamDep,
    records: VectorStoresDep,
) -> VectorStoreFileDeleted:
    """Delete the file's documents from the collection; the uploaded file stays. 409 while
    its ingestion job runs."""
    await _collection(upstream, principal.tenant_id, vector_store_id)
    row = await _stored_file(records, principal.tenant_id, vector_store_id, file_id)
    await _refresh(upstream, records, [row])
    if row.status == "in_progress":
        raise HTTPException(
            409, f"file {file_id!r} is still being ingested; remove it once its status is final"
        )
    for document_id in document_ids_of(row):
        try:
            await upstream.retrieval.DeleteDocument(
                retrieval_pb2.DeleteDocumentRequest(
                    tenant_id=principal.tenant_id,
                    collection=vector_store_id,
                    document_id=document_id,
                ),
                timeout=upstream.timeout,
                metadata=upstream.metadata,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:  # already gone: fine
                raise
    await records.detach(principal.tenant_id, vector_store_id, file_id)
    return VectorStoreFileDeleted(id=file_id)


@router.post(
    "/{vector_store_id}/files/{file_id}",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Not served: changing a file's attributes (400)",
)
async def update_vector_store_file(
    vector_store_id: VectorStoreIdPath,
    file_id: FileIdPath,
    principal: EditorPrincipal,
    upstream: UpstreamDep,
    records: VectorStoresDep,
) -> VectorStoreFileObject:
    await _collection(upstream, principal.tenant_id, vector_store_id)
    await _stored_file(records, principal.tenant_id, vector_store_id, file_id)
    raise _refuse(
        "attributes: changing a file's attributes is not supported; remove the file and add "
        "it again with the new attributes"
    )


@router.get(
    "/{vector_store_id}/files/{file_id}/content",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Not served: a file's parsed content (400)",
)
async def vector_store_file_content(
    vector_store_id: VectorStoreIdPath,
    file_id: FileIdPath,
    principal: UserPrincipal,
    upstream: UpstreamDep,
    records: VectorStoresDep,
) -> VectorStoreFileObject:
    await _collection(upstream, principal.tenant_id, vector_store_id)
    await _stored_file(records, principal.tenant_id, vector_store_id, file_id)
    raise _refuse(
        "a vector store file's parsed content is not served; read the uploaded bytes with "
        "GET /v1/files/{file_id}/content or search the store"
    )


# ---------------------------------------------------------------- batches


async def _batch_object(
    upstream: Upstream,
    records: VectorStoreRecords,
    tenant_id: str,
    vector_store_id: str,
    batch_id: str,
) -> FileBatchObject:
    rows, _ = await records.files_page(
        tenant_id,
        vector_store_id,
        status=None,
        batch_id=batch_id,
        order="asc",
        after=None,
        before=None,
        limit=MAX_FILE_IDS,
    )
    if not rows:
        raise HTTPException(404, f"batch {batch_id!r} is not in vector store {vector_store_id!r}")
    await _refresh(upstream, records, rows)
    counts = _counts(Counter(row.status for row in rows))
    return FileBatchObject(
        id=batch_id,
        created_at=int(min(row.created_at for row in rows).timestamp()),
        vector_store_id=vector_store_id,
        status="in_progress" if counts.in_progress else "completed",
        file_counts=counts,
    )


@router.post(
    "/{vector_store_id}/file_batches",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Add several files to a vector store (role editor)",
)
async def create_file_batch(
    vector_store_id: VectorStoreIdPath,
    body: CreateFileBatchRequest,
    principal: EditorPrincipal,
    upstream: UpstreamDep,
    files: FileStoreDep,
    records: VectorStoresDep,
) -> FileBatchObject:
    """Add each file as ``POST .../files`` does (one ingestion job per file); the batch's
    status is in_progress until every file's is final."""
    info = await _collection(upstream, principal.tenant_id, vector_store_id)
    _check_file_chunking(body.chunking_strategy, info, "chunking_strategy")
    wanted: list[tuple[str, dict[str, Any] | None]] = []
    for file_id in body.file_ids or ():
        wanted.append((file_id, body.attributes))
    for index, item in enumerate(body.files or ()):
        _check_file_chunking(item.chunking_strategy, info, f"files[{index}].chunking_strategy")
        wanted.append((item.file_id, item.attributes or body.attributes))
    if len({file_id for file_id, _ in wanted}) != len(wanted):
        raise HTTPException(422, "file_ids: a file is named twice")
    for file_id, _ in wanted:
        if await files.get(principal.tenant_id, file_id) is None:
            raise file_not_found(file_id)
    batch_id = f"vsfb_{uuid.uuid4().hex}"
    for file_id, attributes in wanted:
        await _add_file(
            upstream, files, records, principal, vector_store_id, file_id, attributes, batch_id
        )
    return await _batch_object(upstream, records, principal.tenant_id, vector_store_id, batch_id)


@router.get(
    "/{vector_store_id}/file_batches/{batch_id}",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="A batch of files, with its files' counts by status",
)
async def retrieve_file_batch(
    vector_store_id: VectorStoreIdPath,
    batch_id: BatchIdPath,
    principal: UserPrincipal,
    upstream: UpstreamDep,
    records: VectorStoresDep,
    response: Response,
) -> FileBatchObject:
    await _collection(upstream, principal.tenant_id, vector_store_id)
    batch = await _batch_object(upstream, records, principal.tenant_id, vector_store_id, batch_id)
    if batch.status == "in_progress":
        response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return batch


@router.post(
    "/{vector_store_id}/file_batches/{batch_id}/cancel",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Not served: cancelling a batch (400)",
)
async def cancel_file_batch(
    vector_store_id: VectorStoreIdPath,
    batch_id: BatchIdPath,
    principal: EditorPrincipal,
    upstream: UpstreamDep,
    records: VectorStoresDep,
) -> FileBatchObject:
    await _collection(upstream, principal.tenant_id, vector_store_id)
    await _batch_object(upstream, records, principal.tenant_id, vector_store_id, batch_id)
    raise _refuse(
        "cancelling a batch is not supported: ingestion jobs run to the end; remove files "
        "with DELETE /v1/vector_stores/{id}/files/{file_id} once they are final"
    )


@router.get(
    "/{vector_store_id}/file_batches/{batch_id}/files",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="List the files of a batch",
)
async def list_file_batch_files(
    vector_store_id: VectorStoreIdPath,
    batch_id: BatchIdPath,
    principal: UserPrincipal,
    upstream: UpstreamDep,
    records: VectorStoresDep,
    limit: Limit = 20,
    order: OrderQuery = "desc",
    after: Cursor = None,
    before: Cursor = None,
    filter: StatusFilter = None,
) -> VectorStoreFileList:
    info = await _collection(upstream, principal.tenant_id, vector_store_id)
    await _batch_object(upstream, records, principal.tenant_id, vector_store_id, batch_id)
    return await _file_list(
        upstream,
        records,
        principal.tenant_id,
        vector_store_id,
        info,
        status=filter,
        batch_id=batch_id,
        limit=limit,
        order=order,
        after=after,
        before=before,
    )
