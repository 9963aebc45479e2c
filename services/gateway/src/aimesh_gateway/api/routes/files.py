"""OpenAI's files API (``client.files.*``): upload, list, retrieve, read and delete the
files that are then added to vector stores (api/routes/vector_stores.py).

A file is stored for the caller's tenant, bytes included, in the gateway's database. It is
held to the limits of the native upload (``POST /v1/collections/{c}/files``): one file at
most ``MAX_FILE_BYTES``, of a type the parser reads; a tenant's files together at most
``AIMESH_FILES_MAX_TENANT_BYTES``. Files are kept until deleted (``expires_after`` is
refused), and deleting one leaves what was ingested from it in vector stores.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Path, Query, Request, Response, UploadFile

from aimesh_gateway.api.deps import API_PREFIX, EditorPrincipal, FileStoreDep, UserPrincipal
from aimesh_gateway.api.routes.jobs import MAX_FILE_BYTES, MAX_UPLOAD_BYTES, UPLOAD_ERRORS
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.db.models import StoredFile
from aimesh_gateway.parsing import SUPPORTED
from aimesh_gateway.schemas.files import (
    FILE_PURPOSES,
    MAX_FILENAME_CHARS,
    FileDeleted,
    FileList,
    FileObject,
)
from aimesh_gateway.schemas.problem import COMMON_ERRORS, problem_doc
from aimesh_gateway.schemas.vector_stores import OBJECT_ID_PATTERN
from aimesh_gateway.stores.files import TenantQuotaExceeded, UnknownCursor

router = APIRouter(prefix=f"{API_PREFIX}/files", tags=["openai"], route_class=CheckedJSONRoute)

FILE_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem_doc("No file of that id in the caller's tenant.")
}
# Form fields of OpenAI's upload that are read; any other is refused, naming it.
_UPLOAD_FIELDS = frozenset({"file", "purpose"})

FileIdPath = Annotated[
    str,
    Path(pattern=OBJECT_ID_PATTERN, description="A file's id.", examples=["file-3f2a9c0d"]),
]


def file_object(row: StoredFile) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=int(row.created_at.timestamp()),
        filename=row.filename,
        purpose=row.purpose,
    )


def file_not_found(file_id: str) -> HTTPException:
    return HTTPException(404, f"file {file_id!r} does not exist")


@router.post(
    "",
    responses={**COMMON_ERRORS, **UPLOAD_ERRORS},
    summary="Upload a file for vector stores (OpenAI files API; role editor)",
    openapi_extra={"x-max-body-bytes": MAX_UPLOAD_BYTES},
)
async def create_file(
    request: Request,
    file: Annotated[UploadFile, File(description="The file (.txt .md .html .pdf .docx ...).")],
    purpose: Annotated[str, Form(max_length=32, description=f"One of {', '.join(FILE_PURPOSES)}.")],
    principal: EditorPrincipal,
    files: FileStoreDep,
) -> FileObject:
    """Store the file for the caller's tenant; add it to a vector store with
    ``POST /v1/vector_stores/{id}/files``. Its type is checked here (415 naming the file);
    its text is read when it is added to a vector store."""
    extra = sorted(set((await request.form()).keys()) - _UPLOAD_FIELDS)
    if extra:
        name = extra[0].split("[", 1)[0]
        if name == "expires_after":
            raise HTTPException(400, "expires_after: files do not expire here; delete them")
        raise HTTPException(400, f"{name}: not a parameter of the file upload")
    if purpose not in FILE_PURPOSES:
        raise HTTPException(
            400,
            f"purpose {purpose!r} is not supported: files here are for vector stores "
            f"({', '.join(FILE_PURPOSES)})",
        )
    filename = file.filename or "upload"
    if len(filename) > MAX_FILENAME_CHARS:
        raise HTTPException(422, f"filename: at most {MAX_FILENAME_CHARS} characters")
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if suffix not in SUPPORTED:
        raise HTTPException(
            415,
            f"file {filename!r} has the unsupported type {suffix or '(none)'!r}; "
            f"supported: {', '.join(SUPPORTED)}",
        )
    content = await file.read(MAX_FILE_BYTES + 1)
    if len(content) > MAX_FILE_BYTES:
        raise HTTPException(413, f"file {filename!r}: at most {MAX_FILE_BYTES} bytes are allowed")
    if not content:
        raise HTTPException(422, f"file {filename!r} is empty")
    try:
        row = await files.add(principal.tenant_id, filename, purpose, content)
    except TenantQuotaExceeded as error:
        raise HTTPException(413, f"file {filename!r} is refused: {error}") from None
    return file_object(row)


@router.get("", responses=COMMON_ERRORS, summary="List files (OpenAI files API)")
async def list_files(
    principal: UserPrincipal,
    files: FileStoreDep,
    purpose: Annotated[str | None, Query(max_length=32, description="Only this purpose.")] = None,
    limit: Annotated[int, Query(ge=1, le=10000, description="Most files to return.")] = 10000,
    order: Annotated[
        Literal["asc", "desc"], Query(description="By creation time; desc: newest first.")
    ] = "desc",
    after: Annotated[
        str | None, Query(max_length=64, description="List the files after this file id.")
    ] = None,
) -> FileList:
    try:
        rows, more = await files.page(
            principal.tenant_id, purpose=purpose, order=order, after=after, before=None, limit=limit
        )
    except UnknownCursor as unknown:
        raise HTTPException(400, f"after: no file {str(unknown)!r} to list after") from None
    data = [file_object(row) for row in rows]
    return FileList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=more,
    )


@router.get(
    "/{file_id}", responses={**COMMON_ERRORS, **FILE_NOT_FOUND}, summary="A file's description"
)
async def retrieve_file(
    file_id: FileIdPath, principal: UserPrincipal, files: FileStoreDep
) -> FileObject:
    row = await files.get(principal.tenant_id, file_id)
    if row is None:
        raise file_not_found(file_id)
    return file_object(row)


@router.get(
    "/{file_id}/content",
    responses={
        **COMMON_ERRORS,
        **FILE_NOT_FOUND,
        200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."},
    },
    response_class=Response,
    summary="A file's bytes",
)
async def file_content(
    file_id: FileIdPath, principal: UserPrincipal, files: FileStoreDep
) -> Response:
    content = await files.content(principal.tenant_id, file_id)
    if content is None:
        raise file_not_found(file_id)
    return Response(content, media_type="application/octet-stream")


@router.delete(
    "/{file_id}",
    responses={**COMMON_ERRORS, **FILE_NOT_FOUND},
    summary="Delete a file (role editor)",
)
async def delete_file(
    file_id: FileIdPath, principal: EditorPrincipal, files: FileStoreDep
) -> FileDeleted:
    """Delete the file and its bytes. What was ingested from it stays in the vector stores
    it was added to (remove it there with ``DELETE /v1/vector_stores/{id}/files/{file_id}``)."""
    if not await files.delete(principal.tenant_id, file_id):
        raise file_not_found(file_id)
    return FileDeleted(id=file_id)
