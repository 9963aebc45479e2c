"""Create, list and delete collections (retrieval service)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from aimesh.retrieval.v1 import retrieval_pb2
from aimesh_gateway.api.deps import (
    API_PREFIX,
    CollectionPath,
    EditorPrincipal,
    UpstreamDep,
    UserPrincipal,
    VectorStoresDep,
)
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.schemas.collections import (
    ChunkingSettings,
    CollectionInfo,
    CollectionList,
    CreateCollectionRequest,
    FusionSettings,
    UpdateCollectionRequest,
)
from aimesh_gateway.schemas.problem import COMMON_ERRORS, NOT_FOUND, problem_doc

router = APIRouter(
    prefix=f"{API_PREFIX}/collections", tags=["collections"], route_class=CheckedJSONRoute
)

CONFLICT: dict[int | str, dict[str, Any]] = {
    409: problem_doc(
        "A collection of that name exists already, or rerank was asked for without a "
        "reranker configured."
    )
}


_FUSIONS = {
    retrieval_pb2.FUSION_ADAPTIVE: "adaptive",
    retrieval_pb2.FUSION_RRF: "rrf",
    retrieval_pb2.FUSION_WEIGHTED: "weighted",
}
_FUSION_ENUMS = {name: number for number, name in _FUSIONS.items()}


def _fusion(message: retrieval_pb2.CollectionInfo) -> FusionSettings | None:
    if not message.HasField("fusion") or message.fusion.fusion not in _FUSIONS:
        return None
    given = message.fusion
    weight = round(given.dense_weight, 6) if given.HasField("dense_weight") else None
    return FusionSettings.model_validate({"fusion": _FUSIONS[given.fusion], "dense_weight": weight})


def _info(message: retrieval_pb2.CollectionInfo) -> CollectionInfo:
    hnsw = message.index.index_type == "HNSW"
    return CollectionInfo(
        fusion=_fusion(message),
        name=message.name,
        chunking=ChunkingSettings(
            chunk_size=message.chunking.chunk_size,
            chunk_overlap=message.chunking.chunk_overlap,
            markdown=message.chunking.markdown,
            context=message.chunking.context,
        ),
        index_type=message.index.index_type,
        hnsw_m=message.index.hnsw_m if hnsw else None,
        hnsw_ef_construction=message.index.hnsw_ef_construction if hnsw else None,
        full_text=message.full_text,
        dimension=message.dimension,
        rerank=message.rerank,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**COMMON_ERRORS, **CONFLICT},
    summary="Create a collection (role editor)",
)
async def create_collection(
    body: CreateCollectionRequest,
    principal: EditorPrincipal,
    upstream: UpstreamDep,
) -> CollectionInfo:
    """Create an empty collection with its chunking and index settings. Upserting into a
    collection that does not exist creates it with the defaults."""
    request = retrieval_pb2.CreateCollectionRequest(
        tenant_id=principal.tenant_id, collection=body.name, rerank=body.rerank
    )
    if body.chunking is not None:
        request.chunking.CopyFrom(
            retrieval_pb2.ChunkingSettings(
                chunk_size=body.chunking.chunk_size,
                chunk_overlap=body.chunking.chunk_overlap,
                markdown=body.chunking.markdown,
                context=body.chunking.context,
            )
        )
    if body.index is not None:
        request.index.CopyFrom(
            retrieval_pb2.IndexSettings(
                index_type=body.index.index_type or "",
                hnsw_m=body.index.hnsw_m or 0,
                hnsw_ef_construction=body.index.hnsw_ef_construction or 0,
            )
        )
    reply = await upstream.retrieval.CreateCollection(
        request, timeout=upstream.timeout, metadata=upstream.metadata
    )
    return _info(reply)


@router.get("", responses=COMMON_ERRORS, summary="List collections")
async def list_collections(principal: UserPrincipal, upstream: UpstreamDep) -> CollectionList:
    """The caller's tenant's collections with their settings, sorted by name."""
    reply = await upstream.retrieval.ListCollections(
        retrieval_pb2.ListCollectionsRequest(tenant_id=principal.tenant_id),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    return CollectionList(collections=[_info(item) for item in reply.collections])


@router.patch(
    "/{collection}",
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Change a collection's search defaults (role editor)",
)
async def update_collection(
    collection: CollectionPath,
    body: UpdateCollectionRequest,
    principal: EditorPrincipal,
    upstream: UpstreamDep,
) -> CollectionInfo:
    """Set (or with null clear) the hybrid fusion that searches of this collection use when
    they name none. Other retrieval replicas apply it within 30 seconds."""
    request = retrieval_pb2.UpdateCollectionSettingsRequest(
        tenant_id=principal.tenant_id, collection=collection
    )
    if body.fusion is None:
        request.clear_fusion = True
    else:
        request.fusion.CopyFrom(
            retrieval_pb2.FusionSettings(
                fusion=_FUSION_ENUMS[body.fusion.fusion], dense_weight=body.fusion.dense_weight
            )
        )
    reply = await upstream.retrieval.UpdateCollectionSettings(
        request, timeout=upstream.timeout, metadata=upstream.metadata
    )
    return _info(reply)


@router.delete(
    "/{collection}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**COMMON_ERRORS, **NOT_FOUND},
    summary="Delete a collection and all its documents (role editor)",
)
async def delete_collection(
    collection: CollectionPath,
    principal: EditorPrincipal,
    upstream: UpstreamDep,
    vector_stores: VectorStoresDep,
) -> Response:
    """Drop the collection and every document in it (and what the vector-store API kept
    about it: its display name, its files' records)."""
    await upstream.retrieval.DeleteCollection(
        retrieval_pb2.DeleteCollectionRequest(tenant_id=principal.tenant_id, collection=collection),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    await vector_stores.forget(principal.tenant_id, collection)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
