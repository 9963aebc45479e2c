"""File uploads (multipart) into a collection as background jobs, and job status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Path, UploadFile, status

from aimesh.retrieval.v1 import retrieval_pb2
from aimesh_common import jsonlimits
from aimesh_common.structs import to_struct
from aimesh_gateway.api.deps import (
    API_PREFIX,
    CollectionPath,
    EditorPrincipal,
    Upstream,
    UpstreamDep,
    UserPrincipal,
)
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.parsing import FileRejected, ParsedDocument, parse_file
from aimesh_gateway.schemas.jobs import JobProgress, JobStatus, UploadAccepted, UploadedDocument
from aimesh_gateway.schemas.problem import COMMON_ERRORS, NOT_FOUND, problem_doc

router = APIRouter(prefix=API_PREFIX, tags=["ingestion"], route_class=CheckedJSONRoute)

MAX_UPLOAD_BYTES = 64 * 1024 * 1024
"""Largest multipart body (all files together)."""
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_FILES = 1000
# The retrieval service's per-document limit (AIMESH_MAX_DOCUMENT_CHARS default).
MAX_DOCUMENT_CHARS = 1_000_000
# Documents per message of the job stream (bounded message size).
DOCUMENTS_PER_MESSAGE = 16

_STATES: dict[int, Literal["queued", "running", "succeeded", "failed"]] = {
    retrieval_pb2.JOB_STATE_QUEUED: "queued",
    retrieval_pb2.JOB_STATE_RUNNING: "running",
    retrieval_pb2.JOB_STATE_SUCCEEDED: "succeeded",
    retrieval_pb2.JOB_STATE_FAILED: "failed",
}

UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    413: problem_doc("A file (or the whole upload) is too large; the detail names the file."),
    415: problem_doc("A file has an unsupported type; the detail names the file."),
}


def job_state(job: retrieval_pb2.IngestJob) -> Literal["queued", "running", "succeeded", "failed"]:
    return _STATES.get(job.state, "failed")


async def submit_documents(
    upstream: Upstream, tenant_id: str, collection: str, documents: list[ParsedDocument]
) -> retrieval_pb2.IngestJob:
    """Start the retrieval service's background job that chunks, embeds and stores
    ``documents`` in the tenant's collection (created on first use); the job as submitted."""

    async def messages() -> AsyncIterator[retrieval_pb2.SubmitIngestJobRequest]:
        for start in range(0, len(documents), DOCUMENTS_PER_MESSAGE):
            part = retrieval_pb2.SubmitIngestJobRequest()
            if start == 0:
                part.tenant_id = tenant_id
                part.collection = collection
            for document in documents[start : start + DOCUMENTS_PER_MESSAGE]:
                part.documents.append(
                    retrieval_pb2.Document(
                        id=document.id, text=document.text, metadata=to_struct(document.metadata)
                    )
                )
            yield part

    job: retrieval_pb2.IngestJob = await upstream.retrieval.SubmitIngestJob(
        messages(), timeout=upstream.timeout, metadata=upstream.metadata
    )
    return job


def _parse_all(files: list[UploadFile]) -> list[ParsedDocument]:
    documents: list[ParsedDocument] = []
    seen: dict[str, str] = {}
    for upload in files:
        filename = upload.filename or "upload"
        parsed = parse_file(
            upload.file,
            filename,
            upload.size if upload.size is not None else 0,
            max_bytes=MAX_FILE_BYTES,
            max_chars=MAX_DOCUMENT_CHARS,
        )
        for document in parsed:
            if document.id in seen:
                raise FileRejected(
                    422, filename, f"gives document id '{document.id}' a second time"
                )
            seen[document.id] = filename
        documents.extend(parsed)
    return documents


@router.post(
    "/collections/{collection}/files",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**COMMON_ERRORS, **UPLOAD_ERRORS},
    summary="Upload files for background ingestion (role editor)",
    openapi_extra={"x-max-body-bytes": MAX_UPLOAD_BYTES},
)
async def upload_files(
    collection: CollectionPath,
    files: Annotated[list[UploadFile], File(description="One or more files.")],
    principal: EditorPrincipal,
    upstream: UpstreamDep,
    metadata: Annotated[
        str | None, Form(description="JSON object added to the metadata of every document.")
    ] = None,
) -> UploadAccepted:
    """Parse every file (.txt .md .html .pdf .docx .csv .json), then start a background job
    that chunks, embeds and stores them; answer 202 with the job id. A corrupt, empty,
    oversized or unsupported file fails the whole upload with a 4xx naming the file, and
    nothing is stored."""
    if len(files) > MAX_FILES:
        raise HTTPException(413, f"at most {MAX_FILES} files per upload")
    extra: dict[str, Any] = {}
    if metadata:
        try:
            extra = jsonlimits.loads(
                metadata,
                "metadata",
                max_depth=jsonlimits.MAX_STRUCT_DEPTH,
                max_int=jsonlimits.MAX_EXACT_INT,
            )
        except jsonlimits.JsonLimitError as error:
            raise HTTPException(422, str(error)) from None
        except json.JSONDecodeError:
            extra = None  # type: ignore[assignment]
        if not isinstance(extra, dict):
            raise HTTPException(422, "metadata must be a JSON object")
    try:
        # Parsing is CPU work (PDF, DOCX): off the event loop.
        documents = await asyncio.to_thread(_parse_all, files)
    except FileRejected as rejected:
        raise HTTPException(rejected.status, str(rejected)) from None

    job = await submit_documents(
        upstream,
        principal.tenant_id,
        collection,
        [ParsedDocument(d.id, d.text, {**extra, **d.metadata}) for d in documents],
    )
    return UploadAccepted(
        job_id=job.id,
        status_url=f"{API_PREFIX}/jobs/{job.id}",
        documents=[
            UploadedDocument(id=d.id, source=str(d.metadata.get("source", d.id))) for d in documents
        ],
    )


@router.get(
    "/jobs/{job_id}",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="State and progress of an ingestion job",
)
async def get_job(
    job_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="Job id.")],
    principal: UserPrincipal,
    upstream: UpstreamDep,
) -> JobStatus:
    """State (queued, running, succeeded, failed), chunks embedded of total, and errors."""
    job = await upstream.retrieval.GetIngestJob(
        retrieval_pb2.GetIngestJobRequest(tenant_id=principal.tenant_id, job_id=job_id),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    return JobStatus(
        id=job.id,
        collection=job.collection,
        state=job_state(job),
        progress=JobProgress(
            documents_done=job.documents_done,
            documents_total=job.documents_total,
            chunks_embedded=job.chunks_embedded,
            chunks_total=job.chunks_total,
        ),
        errors=list(job.errors),
        created_at=job.created_at,
        updated_at=job.updated_at,
    )
