"""Collections API and hybrid/BM25 search through the real service, on Lite and the server.

Milvus Lite has BM25 full-text search; the Milvus 2.3.5 server has not, and there BM25
and hybrid requests must fail with FAILED_PRECONDITION instead of silently going dense.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from aimesh.retrieval.v1 import retrieval_pb2 as pb
from aimesh_retrieval.chunking import count_tokens
from aimesh_retrieval.store import CollectionRef
from tests.retrieval.conftest import Retrieval, new_collection

TENANT = "tenant-a"

# The rare token "zorblax" only matters to BM25: dense similarity of the query to the
# espresso text is higher, so dense and BM25 disagree on the best document.
DOCS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "coffee",
        "An espresso is brewed by forcing hot water through finely ground coffee beans.",
        {"lang": "en", "year": 2021},
    ),
    (
        "part",
        "Replacement part zorblax-7731 fits the older grinder models only.",
        {"lang": "en", "year": 2019},
    ),
    (
        "kaffee",
        "Ein Espresso wird mit heissem Wasser und fein gemahlenem Kaffee gebrueht.",
        {"lang": "de", "year": 2022},
    ),
    (
        "volcano",
        "Mount Etna erupts lava and ash; zorblax is not a word anyone uses there.",
        {"lang": "en", "year": 2010},
    ),
]


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


async def upsert(
    retrieval: Retrieval, collection: str, docs: list[tuple[str, str, dict[str, Any]]], tenant: str
) -> None:
    await retrieval.stub.UpsertDocuments(
        pb.UpsertDocumentsRequest(
            tenant_id=tenant,
            collection=collection,
            documents=[pb.Document(id=i, text=t, metadata=struct(m)) for i, t, m in docs],
        )
    )


async def search(
    retrieval: Retrieval,
    collection: str,
    query: str,
    mode: pb.SearchMode.ValueType,
    *,
    tenant: str = TENANT,
    filter: dict[str, Any] | None = None,
    **extra: Any,
) -> list[pb.ScoredChunk]:
    request = pb.SearchRequest(
        tenant_id=tenant, collection=collection, query=query, top_k=10, mode=mode, **extra
    )
    if filter is not None:
        request.filter.CopyFrom(struct(filter))
    return list((await retrieval.stub.Search(request)).chunks)


def on_server(retrieval: Retrieval) -> bool:
    return retrieval.store.is_server


async def test_create_list_delete(retrieval: Retrieval) -> None:
    name = new_collection()
    created = await retrieval.stub.CreateCollection(
        pb.CreateCollectionRequest(
            tenant_id=TENANT,
            collection=name,
            chunking=pb.ChunkingSettings(chunk_size=30, chunk_overlap=5, markdown=True),
        )
    )
    assert (created.name, created.dimension) == (name, 384)
    assert (created.chunking.chunk_size, created.chunking.chunk_overlap) == (30, 5)
    assert created.chunking.markdown
    assert created.index.index_type == ("HNSW" if on_server(retrieval) else "FLAT")
    assert created.full_text == (not on_server(retrieval))

    again = await _error(
        retrieval.stub.CreateCollection(
            pb.CreateCollectionRequest(tenant_id=TENANT, collection=name)
        )
    )
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS
    assert again.details() == f"collection '{name}' already exists"

    listed = await retrieval.stub.ListCollections(pb.ListCollectionsRequest(tenant_id=TENANT))
    mine = [c for c in listed.collections if c.name == name]
    assert len(mine) == 1
    assert mine[0].chunking.chunk_size == 30
    names = [c.name for c in listed.collections]
    assert names == sorted(names)
    other = await retrieval.stub.ListCollections(pb.ListCollectionsRequest(tenant_id="tenant-z"))
    assert name not in [c.name for c in other.collections]

    # Its chunking applies to upserts: 30-token chunks of a ~150-token text.
    text = " ".join(f"Sentence number {i} talks about harbours." for i in range(20))
    reply = await retrieval.stub.UpsertDocuments(
        pb.UpsertDocumentsRequest(
            tenant_id=TENANT, collection=name, documents=[pb.Document(id="d", text=text)]
        )
    )
    chunks = reply.results[0].chunks
    assert chunks >= count_tokens(text) // 30
    hits = await search(retrieval, name, "harbours", pb.SEARCH_MODE_DENSE)
    assert all(count_tokens(hit.text) <= 30 for hit in hits)

    # Another tenant cannot delete it; the owner can, and then it is gone.
    error = await _error(
        retrieval.stub.DeleteCollection(
            pb.DeleteCollectionRequest(tenant_id="tenant-z", collection=name)
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    await retrieval.stub.DeleteCollection(
        pb.DeleteCollectionRequest(tenant_id=TENANT, collection=name)
    )
    gone = await _error(
        retrieval.stub.ListDocuments(pb.ListDocumentsRequest(tenant_id=TENANT, collection=name))
    )
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    assert await retrieval.store.dimension(CollectionRef(TENANT, name)) is None
    listed = await retrieval.stub.ListCollections(pb.ListCollectionsRequest(tenant_id=TENANT))
    assert name not in [c.name for c in listed.collections]


async def test_implicit_collections_get_the_default_chunking(retrieval: Retrieval) -> None:
    name = new_collection()
    await upsert(retrieval, name, DOCS[:1], TENANT)
    listed = await retrieval.stub.ListCollections(pb.ListCollectionsRequest(tenant_id=TENANT))
    [info] = [c for c in listed.collections if c.name == name]
    settings = retrieval.settings
    assert (info.chunking.chunk_size, info.chunking.chunk_overlap) == (
        settings.chunk_size,
        settings.chunk_overlap,
    )


@pytest.mark.parametrize(
    ("field", "request_", "message"),
    [
        (
            "chunk_size",
            pb.CreateCollectionRequest(chunking=pb.ChunkingSettings(chunk_size=300)),
            "chunking.chunk_size must be between 1 and 254 tokens (got 300)",
        ),
        (
            "chunk_overlap",
            pb.CreateCollectionRequest(
                chunking=pb.ChunkingSettings(chunk_size=50, chunk_overlap=50)
            ),
            "chunking.chunk_overlap must be at least 0 and smaller than chunk_size "
            "(got 50 with chunk_size 50)",
        ),
        (
            "index_type",
            pb.CreateCollectionRequest(index=pb.IndexSettings(index_type="IVF")),
            "index.index_type must be FLAT or HNSW (got 'IVF')",
        ),
    ],
)
async def test_bad_collection_settings(
    retrieval: Retrieval, field: str, request_: pb.CreateCollectionRequest, message: str
) -> None:
    request_.tenant_id = TENANT
    request_.collection = new_collection()
    error = await _error(retrieval.stub.CreateCollection(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == message


async def test_hnsw_settings_on_the_server_and_refused_on_lite(retrieval: Retrieval) -> None:
    request = pb.CreateCollectionRequest(
        tenant_id=TENANT,
        collection=new_collection(),
        index=pb.IndexSettings(index_type="HNSW", hnsw_m=8, hnsw_ef_construction=64),
    )
    if on_server(retrieval):
        info = await retrieval.stub.CreateCollection(request)
        assert (info.index.index_type, info.index.hnsw_m, info.index.hnsw_ef_construction) == (
            "HNSW",
            8,
            64,
        )
    else:
        error = await _error(retrieval.stub.CreateCollection(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Lite has FLAT only" in (error.details() or "")


async def test_bm25_and_hybrid(retrieval: Retrieval) -> None:
    name = new_collection()
    await upsert(retrieval, name, DOCS, TENANT)
    query = "zorblax-7731 grinder"
    if on_server(retrieval):
        for mode in (pb.SEARCH_MODE_BM25, pb.SEARCH_MODE_HYBRID):
            error = await _error(search(retrieval, name, query, mode))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "needs Milvus >= 2.5" in (error.details() or "")
        return
    bm25 = await search(retrieval, name, query, pb.SEARCH_MODE_BM25)
    # Only documents sharing a term with the query; the one with all terms ranks first.
    assert [hit.document_id for hit in bm25] == ["part", "volcano"]
    assert all(hit.score > 0 for hit in bm25)
    assert [h.score for h in bm25] == sorted((h.score for h in bm25), reverse=True)

    fusions = (pb.FUSION_UNSPECIFIED, pb.FUSION_ADAPTIVE, pb.FUSION_RRF, pb.FUSION_WEIGHTED)
    for fusion in fusions:
        hybrid = await search(retrieval, name, query, pb.SEARCH_MODE_HYBRID, fusion=fusion)
        ids = [hit.document_id for hit in hybrid]
        # Every document appears once (dense finds all), the rare token pulls "part" up.
        assert sorted(ids) == sorted(doc[0] for doc in DOCS)
        assert ids.index("part") <= 1
        if fusion in (pb.FUSION_UNSPECIFIED, pb.FUSION_ADAPTIVE):
            # Adaptive (the default) scores are the fused ones, in [0, 1], best first.
            assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)
            assert all(0.0 <= h.score <= 1.0 for h in hybrid)
    # Weight 1 is dense order; weight 0 is BM25 order (for the BM25 matches).
    dense = [h.document_id for h in await search(retrieval, name, query, pb.SEARCH_MODE_DENSE)]
    only_dense = await search(
        retrieval, name, query, pb.SEARCH_MODE_HYBRID, fusion=pb.FUSION_WEIGHTED, dense_weight=1.0
    )
    assert [h.document_id for h in only_dense] == dense
    only_bm25 = await search(
        retrieval, name, query, pb.SEARCH_MODE_HYBRID, fusion=pb.FUSION_WEIGHTED, dense_weight=0.0
    )
    assert [h.document_id for h in only_bm25][: len(bm25)] == [h.document_id for h in bm25]


async def test_filters_and_tenants_hold_under_hybrid_and_bm25(retrieval: Retrieval) -> None:
    if on_server(retrieval):
        pytest.skip("no BM25 on Milvus 2.3.5 (covered by test_bm25_and_hybrid)")
    name = new_collection()
    await upsert(retrieval, name, DOCS, TENANT)
    # Same collection name, other tenant, documents that match the query even better.
    await upsert(
        retrieval,
        name,
        [("leak", "zorblax-7731 espresso grinder zorblax espresso", {"lang": "en", "year": 2021})],
        "tenant-b",
    )
    query = "zorblax-7731 espresso grinder"
    for mode in (pb.SEARCH_MODE_HYBRID, pb.SEARCH_MODE_BM25, pb.SEARCH_MODE_DENSE):
        hits = await search(retrieval, name, query, mode)
        assert "leak" not in {h.document_id for h in hits}
        filtered = await search(retrieval, name, query, mode, filter={"lang": "de"})
        assert {h.document_id for h in filtered} <= {"kaffee"}
        recent = await search(
            retrieval, name, query, mode, filter={"$and": [{"year": {"$gte": 2020}}]}
        )
        assert {h.document_id for h in recent} <= {"coffee", "kaffee"}
        assert {h.document_id for h in recent} & {"coffee", "kaffee"}
        b_hits = await search(retrieval, name, query, mode, tenant="tenant-b")
        assert {h.document_id for h in b_hits} == {"leak"}


async def test_bad_search_options(retrieval: Retrieval) -> None:
    name = new_collection()
    await upsert(retrieval, name, DOCS[:1], TENANT)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"dense_weight": 1.5}, "dense_weight must be between 0 and 1 (got 1.5)"),
        ({"mmr": True, "mmr_lambda": -0.5}, "mmr_lambda must be between 0 and 1 (got -0.5)"),
        ({"mode": 9}, "mode 9 is not a known search mode"),
    ]
    for extra, message in cases:
        mode = extra.pop("mode", pb.SEARCH_MODE_DENSE)
        error = await _error(search(retrieval, name, "espresso", mode, **extra))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, extra
        assert error.details() == message


async def test_mmr_diversifies(retrieval: Retrieval) -> None:
    name = new_collection()
    same = "Espresso is brewed by forcing hot water through finely ground coffee beans."
    docs: list[tuple[str, str, dict[str, Any]]] = [
        ("copy-1", same, {}),
        ("copy-2", same + " Really.", {}),
        ("tea", "Green tea is steeped in water that is not quite boiling.", {}),
    ]
    await upsert(retrieval, name, docs, TENANT)
    plain = await search(retrieval, name, "brewing hot drinks", pb.SEARCH_MODE_DENSE)
    assert {h.document_id for h in plain[:2]} == {"copy-1", "copy-2"}
    diverse = await search(
        retrieval, name, "brewing hot drinks", pb.SEARCH_MODE_DENSE, mmr=True, mmr_lambda=0.3
    )
    assert "tea" in {h.document_id for h in diverse[:2]}


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value
