"""Similarity search in a collection (retrieval service)."""

from __future__ import annotations

from fastapi import APIRouter

from aimesh.retrieval.v1 import retrieval_pb2
from aimesh_gateway.api.deps import (
    API_PREFIX,
    BackendsDep,
    CallOptionsDep,
    CollectionPath,
    UserPrincipal,
)
from aimesh_gateway.core.structs import from_struct, score, to_struct
from aimesh_gateway.schemas.problem import COMMON_ERRORS, NOT_FOUND
from aimesh_gateway.schemas.search import SearchRequest, SearchResponse, SearchResult

router = APIRouter(prefix=API_PREFIX, tags=["search"])


@router.post(
    "/collections/{collection}/search",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Search a collection",
)
async def search(
    collection: CollectionPath,
    body: SearchRequest,
    principal: UserPrincipal,
    backends: BackendsDep,
    call: CallOptionsDep,
) -> SearchResponse:
    """The chunks most similar to the query, best first."""
    reply = await backends.retrieval.Search(
        retrieval_pb2.SearchRequest(
            tenant_id=principal.tenant_id,
            collection=collection,
            query=body.query,
            top_k=body.top_k,
            filter=to_struct(body.filter),
        ),
        timeout=call.timeout,
        metadata=call.metadata,
    )
    return SearchResponse(
        results=[
            SearchResult(
                document_id=chunk.document_id,
                chunk_id=chunk.chunk_id,
                chunk_index=chunk.chunk_index,
                text=chunk.text,
                score=score(chunk.score),
                metadata=from_struct(chunk.metadata),
            )
            for chunk in reply.chunks
        ]
    )
