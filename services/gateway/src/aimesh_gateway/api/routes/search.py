"""Similarity search in a collection (retrieval service)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from aimesh.retrieval.v1 import retrieval_pb2
from aimesh_common.structs import from_struct, to_struct
from aimesh_gateway.api.deps import API_PREFIX, CacheDep, CollectionPath, UpstreamDep, UserPrincipal
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.schemas.common import score
from aimesh_gateway.schemas.problem import COMMON_ERRORS, NOT_FOUND, problem_doc
from aimesh_gateway.schemas.search import SearchRequest, SearchResponse, SearchResult

router = APIRouter(prefix=API_PREFIX, tags=["search"], route_class=CheckedJSONRoute)

_MODES = {
    "dense": retrieval_pb2.SEARCH_MODE_DENSE,
    "bm25": retrieval_pb2.SEARCH_MODE_BM25,
    "hybrid": retrieval_pb2.SEARCH_MODE_HYBRID,
}
_FUSIONS = {
    None: retrieval_pb2.FUSION_UNSPECIFIED,
    "adaptive": retrieval_pb2.FUSION_ADAPTIVE,
    "rrf": retrieval_pb2.FUSION_RRF,
    "weighted": retrieval_pb2.FUSION_WEIGHTED,
}


@router.post(
    "/collections/{collection}/search",
    response_model=SearchResponse,
    responses={
        **COMMON_ERRORS,
        **NOT_FOUND,
        409: problem_doc(
            "rerank asked for without a reranker configured, or bm25/hybrid on a backend "
            "without full-text search."
        ),
    },
    summary="Search a collection",
)
async def search(
    collection: CollectionPath,
    body: SearchRequest,
    principal: UserPrincipal,
    upstream: UpstreamDep,
    cache: CacheDep,
) -> SearchResponse | Response:
    """The chunks most similar to the query, best first. Answers are cached (``X-Cache: hit``)
    until the collection changes; ``Cache-Control: no-cache`` skips the cache."""
    key, cached = await cache.lookup("", body.model_dump(mode="json"), collection=collection)
    if cached is not None:
        return cached
    request = retrieval_pb2.SearchRequest(
        tenant_id=principal.tenant_id,
        collection=collection,
        query=body.query,
        top_k=body.top_k,
        filter=to_struct(body.filter),
        mode=_MODES[body.mode],
        fusion=_FUSIONS[body.fusion],
        mmr=body.mmr,
    )
    if body.dense_weight is not None:
        request.dense_weight = body.dense_weight
    if body.mmr_lambda is not None:
        request.mmr_lambda = body.mmr_lambda
    if body.rerank is not None:
        request.rerank = body.rerank
    reply = await upstream.retrieval.Search(
        request,
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    response = SearchResponse(
        results=[
            SearchResult(
                document_id=chunk.document_id,
                chunk_id=chunk.chunk_id,
                chunk_index=chunk.chunk_index,
                text=chunk.text,
                score=score(chunk.score),
                metadata=from_struct(chunk.metadata),
                title=chunk.title,
                section=chunk.section,
            )
            for chunk in reply.chunks
        ]
    )
    await cache.store(key, response)
    return response
