"""UpdateCollectionSettings: a collection's default hybrid fusion, stored with it and used by
searches that name no fusion."""

from __future__ import annotations

import grpc
import pytest

from aimesh.retrieval.v1 import retrieval_pb2 as pb
from aimesh_retrieval.store import CollectionRef
from tests.retrieval.conftest import Retrieval, new_collection
from tests.retrieval.test_servicer import ESPRESSO, PHOTOSYNTHESIS, TENANT, VOLCANO, upsert

QUERY = "green leaves turning sunlight into sugar"


async def scores(retrieval: Retrieval, collection: str, **fusion: object) -> list[float]:
    reply = await retrieval.stub.Search(
        pb.SearchRequest(
            tenant_id=TENANT,
            collection=collection,
            query=QUERY,
            top_k=3,
            mode=pb.SEARCH_MODE_HYBRID,
            **fusion,  # type: ignore[arg-type]
        )
    )
    return [round(chunk.score, 5) for chunk in reply.chunks]


async def update(retrieval: Retrieval, collection: str, **fields: object) -> pb.CollectionInfo:
    return await retrieval.stub.UpdateCollectionSettings(
        pb.UpdateCollectionSettingsRequest(
            tenant_id=TENANT,
            collection=collection,
            **fields,  # type: ignore[arg-type]
        )
    )


async def test_a_collection_fusion_applies_when_a_search_names_none(
    retrieval: Retrieval,
) -> None:
    if not await retrieval.store.full_text_supported():
        pytest.skip("hybrid search needs BM25")
    collection = new_collection()
    await upsert(
        retrieval,
        collection,
        [("plants", PHOTOSYNTHESIS, None), ("coffee", ESPRESSO, None), ("volcano", VOLCANO, None)],
    )
    service_default = await scores(retrieval, collection)
    weighted = await scores(retrieval, collection, fusion=pb.FUSION_WEIGHTED, dense_weight=0.3)
    assert weighted != service_default

    info = await update(
        retrieval,
        collection,
        fusion=pb.FusionSettings(fusion=pb.FUSION_WEIGHTED, dense_weight=0.3),
    )
    assert info.fusion.fusion == pb.FUSION_WEIGHTED
    assert info.fusion.dense_weight == pytest.approx(0.3)
    assert await scores(retrieval, collection) == weighted
    # A search naming a fusion still gets it.
    assert await scores(retrieval, collection, fusion=pb.FUSION_ADAPTIVE) == service_default

    # Stored with the collection: read back from Milvus as after a restart.
    ref = CollectionRef(TENANT, collection)
    retrieval.store._ready.pop(ref.physical, None)
    meta = await retrieval.store.require_meta(ref)
    assert meta.fusion is not None
    assert meta.fusion.fusion == "weighted"
    listed = await retrieval.stub.ListCollections(pb.ListCollectionsRequest(tenant_id=TENANT))
    [mine] = [c for c in listed.collections if c.name == collection]
    assert mine.fusion.fusion == pb.FUSION_WEIGHTED

    cleared = await update(retrieval, collection, clear_fusion=True)
    assert not cleared.HasField("fusion")
    assert await scores(retrieval, collection) == service_default


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "nothing to update"),
        (
            {"fusion": pb.FusionSettings(fusion=pb.FUSION_RRF), "clear_fusion": True},
            "either fusion or clear_fusion",
        ),
        (
            {"fusion": pb.FusionSettings(fusion=pb.FUSION_RRF, dense_weight=0.5)},
            "weighted fusion only",
        ),
        (
            {"fusion": pb.FusionSettings(fusion=pb.FUSION_WEIGHTED, dense_weight=1.5)},
            "between 0 and 1",
        ),
        ({"fusion": pb.FusionSettings()}, "not a known fusion"),
    ],
)
async def test_bad_updates_are_invalid_argument(
    retrieval: Retrieval, fields: dict[str, object], message: str
) -> None:
    collection = new_collection()
    await upsert(retrieval, collection, [("d", ESPRESSO, None)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await update(retrieval, collection, **fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_updating_an_unknown_collection_is_not_found(retrieval: Retrieval) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await update(retrieval, "missing", clear_fusion=True)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
