"""Store, list and delete the documents of a collection (retrieval service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query

from aimesh.retrieval.v1 import retrieval_pb2
from aimesh_common.limits import DEFAULT_LIST_LIMIT, MAX_DOCUMENT_ID_CHARS, MAX_LIST_LIMIT
from aimesh_common.structs import from_struct, to_struct
from aimesh_gateway.api.deps import (
    API_PREFIX,
    CollectionPath,
    EditorPrincipal,
    UpstreamDep,
    UserPrincipal,
)
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.schemas.documents import (
    DeleteDocumentResponse,
    DocumentInfo,
    DocumentList,
    UpsertDocumentsRequest,
    UpsertDocumentsResponse,
    UpsertResult,
)
from aimesh_gateway.schemas.problem import COMMON_ERRORS, NOT_FOUND

router = APIRouter(
    prefix=f"{API_PREFIX}/collections/{{collection}}/documents",
    tags=["documents"],
    route_class=CheckedJSONRoute,
)


@router.post("", responses=COMMON_ERRORS, summary="Store documents (role editor)")
async def upsert_documents(
    collection: CollectionPath,
    body: Annotated[
        UpsertDocumentsRequest,
        Body(description='{"documents": [...]} or, for convenience, a bare list of documents.'),
    ],
    principal: EditorPrincipal,
    upstream: UpstreamDep,
) -> UpsertDocumentsResponse:
    """Chunk, embed and store documents. A document whose id exists is replaced; the collection
    is created on first use."""
    reply = await upstream.retrieval.UpsertDocuments(
        retrieval_pb2.UpsertDocumentsRequest(
            tenant_id=principal.tenant_id,
            collection=collection,
            documents=[
                retrieval_pb2.Document(id=doc.id, text=doc.text, metadata=to_struct(doc.metadata))
                for doc in body.documents
            ],
        ),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    return UpsertDocumentsResponse(
        results=[
            UpsertResult(id=item.id, chunks=item.chunks, replaced=item.replaced)
            for item in reply.results
        ]
    )


@router.get("", responses={**COMMON_ERRORS, **NOT_FOUND}, summary="List documents")
async def list_documents(
    collection: CollectionPath,
    principal: UserPrincipal,
    upstream: UpstreamDep,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIST_LIMIT, description="Most documents to return.")
    ] = DEFAULT_LIST_LIMIT,
) -> DocumentList:
    reply = await upstream.retrieval.ListDocuments(
        retrieval_pb2.ListDocumentsRequest(
            tenant_id=principal.tenant_id, collection=collection, limit=limit
        ),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    return DocumentList(
        documents=[
            DocumentInfo(id=doc.id, chunks=doc.chunks, metadata=from_struct(doc.metadata))
            for doc in reply.documents
        ]
    )


@router.delete(
    "/{document_id:path}",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Delete a document (role editor)",
)
async def delete_document(
    collection: CollectionPath,
    document_id: Annotated[str, Path(min_length=1, max_length=MAX_DOCUMENT_ID_CHARS)],
    principal: EditorPrincipal,
    upstream: UpstreamDep,
) -> DeleteDocumentResponse:
    """Remove a document and all of its chunks."""
    reply = await upstream.retrieval.DeleteDocument(
        retrieval_pb2.DeleteDocumentRequest(
            tenant_id=principal.tenant_id, collection=collection, document_id=document_id
        ),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    return DeleteDocumentResponse(deleted_chunks=reply.deleted_chunks)
