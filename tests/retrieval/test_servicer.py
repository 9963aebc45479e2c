"""RetrievalService end to end: real gRPC, real Milvus Lite, the real embedding model."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from prometheus_client import REGISTRY

from aimesh.retrieval.v1 import retrieval_pb2 as pb
from aimesh_common.channels import check_health
from aimesh_retrieval.store import CollectionRef
from tests.retrieval.conftest import Retrieval, new_collection

TENANT = "tenant-a"

PHOTOSYNTHESIS = (
    "Photosynthesis is the process by which green plants use sunlight, water and carbon "
    "dioxide to produce glucose and oxygen. Chlorophyll in the leaves absorbs the light."
)
ESPRESSO = (
    "An espresso is brewed by forcing hot water through finely ground coffee beans at high "
    "pressure. A good shot has a layer of golden crema on top."
)
VOLCANO = (
    "A volcano erupts when molten rock called magma rises through the crust and escapes as "
    "lava, ash and gas. Mount Etna in Sicily is one of the most active volcanoes."
)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def as_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    result = json_format.MessageToDict(message)
    assert isinstance(result, dict)
    return result


def long_text(topic: str, sentences: int) -> str:
    """A paragraph of ``sentences`` numbered sentences (several chunks at size 200)."""
    return " ".join(
        f"Sentence {i} of the {topic} story adds another detail." for i in range(sentences)
    )


async def upsert(
    retrieval: Retrieval,
    collection: str,
    documents: list[tuple[str, str, dict[str, Any] | None]],
    tenant: str = TENANT,
) -> list[pb.UpsertResult]:
    reply = await retrieval.stub.UpsertDocuments(
        pb.UpsertDocumentsRequest(
            tenant_id=tenant,
            collection=collection,
            documents=[
                pb.Document(id=doc_id, text=text, metadata=struct(meta) if meta else None)
                for doc_id, text, meta in documents
            ],
        )
    )
    return list(reply.results)


async def search(
    retrieval: Retrieval,
    collection: str,
    query: str,
    *,
    top_k: int = 0,
    filter: dict[str, Any] | None = None,
    tenant: str = TENANT,
) -> list[pb.ScoredChunk]:
    request = pb.SearchRequest(tenant_id=tenant, collection=collection, query=query, top_k=top_k)
    if filter is not None:
        request.filter.CopyFrom(struct(filter))
    reply = await retrieval.stub.Search(request)
    return list(reply.chunks)


async def listed(
    retrieval: Retrieval, collection: str, tenant: str = TENANT, limit: int = 0
) -> list[pb.DocumentInfo]:
    reply = await retrieval.stub.ListDocuments(
        pb.ListDocumentsRequest(tenant_id=tenant, collection=collection, limit=limit)
    )
    return list(reply.documents)


async def rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_health_is_serving(retrieval: Retrieval) -> None:
    assert await check_health(retrieval.channel, "aimesh.retrieval.v1.RetrievalService")


async def test_upsert_then_search_finds_the_right_document_first(retrieval: Retrieval) -> None:
    collection = new_collection()
    results = await upsert(
        retrieval,
        collection,
        [
            ("plants", PHOTOSYNTHESIS, {"topic": "biology"}),
            ("coffee", ESPRESSO, {"topic": "food"}),
            ("volcano", VOLCANO, None),
        ],
    )
    assert [(r.id, r.replaced) for r in results] == [
        ("plants", False),
        ("coffee", False),
        ("volcano", False),
    ]
    assert all(r.chunks >= 1 for r in results)

    for query, expected in [
        ("How do plants turn light into sugar?", "plants"),
        ("making coffee with a pressure machine", "coffee"),
        ("lava coming out of a mountain", "volcano"),
    ]:
        chunks = await search(retrieval, collection, query)
        assert chunks[0].document_id == expected, (query, chunks[0])
        scores = [chunk.score for chunk in chunks]
        assert scores == sorted(scores, reverse=True)
        assert 0.3 < chunks[0].score <= 1.0001
        assert chunks[0].score - chunks[-1].score > 0.1

    best = (await search(retrieval, collection, "chlorophyll absorbs light", top_k=1))[0]
    assert best.chunk_id == f"plants#{best.chunk_index}"
    assert "Chlorophyll" in best.text
    assert as_dict(best.metadata) == {"topic": "biology"}


async def test_top_k_defaults_to_five_and_is_honoured(retrieval: Retrieval) -> None:
    collection = new_collection()
    await upsert(retrieval, collection, [("long", long_text("harbour", 40), None)])
    assert len(await search(retrieval, collection, "harbour story")) == 5
    assert len(await search(retrieval, collection, "harbour story", top_k=2)) == 2
    assert len(await search(retrieval, collection, "harbour story", top_k=100)) > 5


async def test_same_content_is_not_embedded_again(retrieval: Retrieval) -> None:
    collection = new_collection()
    document = ("doc", long_text("river", 12), {"lang": "en"})
    first = await upsert(retrieval, collection, [document])
    assert first[0].chunks > 1
    chunks_before = counter("aimesh_retrieval_chunks_upserted_total")
    unchanged_before = counter("aimesh_retrieval_documents_upserted_total", outcome="unchanged")

    again = await upsert(retrieval, collection, [document])

    assert (again[0].chunks, again[0].replaced) == (first[0].chunks, False)
    assert counter("aimesh_retrieval_chunks_upserted_total") == chunks_before
    assert (
        counter("aimesh_retrieval_documents_upserted_total", outcome="unchanged")
        == unchanged_before + 1
    )
    ref = CollectionRef(TENANT, collection)
    assert await retrieval.store.count_chunks(ref, "doc") == first[0].chunks

    # The same text with other metadata is a change.
    changed = await upsert(retrieval, collection, [("doc", document[1], {"lang": "de"})])
    assert changed[0].replaced
    assert counter("aimesh_retrieval_chunks_upserted_total") == chunks_before + first[0].chunks
    [info] = await listed(retrieval, collection)
    assert as_dict(info.metadata) == {"lang": "de"}


async def test_changed_content_replaces_without_stale_chunks(retrieval: Retrieval) -> None:
    collection = new_collection()
    ref = CollectionRef(TENANT, collection)
    long_version = long_text("mountain", 30)
    [first, _] = await upsert(
        retrieval, collection, [("doc", long_version, None), ("other", ESPRESSO, None)]
    )
    assert first.chunks >= 5

    [shorter] = await upsert(retrieval, collection, [("doc", VOLCANO, None)])
    assert shorter.replaced
    assert shorter.chunks < first.chunks
    assert await retrieval.store.count_chunks(ref, "doc") == shorter.chunks
    hits = await search(retrieval, collection, "mountain story sentence", top_k=100)
    doc_hits = [hit for hit in hits if hit.document_id == "doc"]
    assert sorted(hit.chunk_index for hit in doc_hits) == list(range(shorter.chunks))
    assert all("mountain story" not in hit.text for hit in doc_hits)

    [longer] = await upsert(retrieval, collection, [("doc", long_text("forest", 25), None)])
    assert longer.replaced
    assert await retrieval.store.count_chunks(ref, "doc") == longer.chunks
    hits = await search(retrieval, collection, "forest story", top_k=100)
    doc_hits = [hit for hit in hits if hit.document_id == "doc"]
    assert len({hit.chunk_id for hit in doc_hits}) == len(doc_hits) == longer.chunks
    assert all("forest story" in hit.text for hit in doc_hits)
    # The other document was not touched.
    assert {(d.id, d.chunks) for d in await listed(retrieval, collection)} == {
        ("doc", longer.chunks),
        ("other", 1),
    }


async def test_concurrent_upserts_of_one_document_do_not_mix(retrieval: Retrieval) -> None:
    collection = new_collection()
    ref = CollectionRef(TENANT, collection)
    # Same length, so the writes of all versions tend to overlap in time.
    words = ["alpha", "gamma", "delta", "omega"]
    for round_ in range(3):
        replies = await asyncio.gather(
            *(
                upsert(retrieval, collection, [("doc", f"{long_text(word, 20)} {round_}", None)])
                for word in words
            )
        )
        # The lock serializes them: exactly the first one to run saw no document.
        assert sorted(reply[0].replaced for reply in replies) == [round_ > 0, True, True, True]
        stored = await retrieval.store.count_chunks(ref, "doc")
        assert stored == replies[0][0].chunks
        hits = await search(retrieval, collection, "story", top_k=100)
        assert len(hits) == stored
        versions = {hit.text.split(" of the ")[1].split()[0] for hit in hits}
        assert len(versions) == 1, versions


async def test_delete_removes_all_chunks(retrieval: Retrieval) -> None:
    collection = new_collection()
    ref = CollectionRef(TENANT, collection)
    [doc, _] = await upsert(
        retrieval, collection, [("doc", long_text("canal", 15), None), ("keep", ESPRESSO, None)]
    )
    reply = await retrieval.stub.DeleteDocument(
        pb.DeleteDocumentRequest(tenant_id=TENANT, collection=collection, document_id="doc")
    )
    assert reply.deleted_chunks == doc.chunks > 1
    assert await retrieval.store.count_chunks(ref, "doc") == 0
    hits = await search(retrieval, collection, "canal story", top_k=100)
    assert {hit.document_id for hit in hits} == {"keep"}
    assert [d.id for d in await listed(retrieval, collection)] == ["keep"]

    again = await rpc_error(
        retrieval.stub.DeleteDocument(
            pb.DeleteDocumentRequest(tenant_id=TENANT, collection=collection, document_id="doc")
        )
    )
    assert again.code() == grpc.StatusCode.NOT_FOUND
    assert again.details() == f"document 'doc' not found in collection '{collection}'"


async def test_list_documents(retrieval: Retrieval) -> None:
    collection = new_collection()
    results = await upsert(
        retrieval,
        collection,
        [
            ("b", long_text("lake", 10), {"n": 2, "tags": ["x", "y"], "ok": True}),
            ("a", ESPRESSO, {"nested": {"k": "v"}}),
            ("c", VOLCANO, None),
        ],
    )
    chunks = {r.id: r.chunks for r in results}
    documents = await listed(retrieval, collection)
    assert [d.id for d in documents] == ["a", "b", "c"]
    assert {d.id: d.chunks for d in documents} == chunks
    assert as_dict(documents[1].metadata) == {"n": 2, "tags": ["x", "y"], "ok": True}
    assert as_dict(documents[0].metadata) == {"nested": {"k": "v"}}
    assert as_dict(documents[2].metadata) == {}
    assert len(await listed(retrieval, collection, limit=2)) == 2


async def test_tenants_are_isolated(retrieval: Retrieval) -> None:
    collection = new_collection()
    await upsert(retrieval, collection, [("secret", PHOTOSYNTHESIS, None)], tenant="tenant-a")

    for call in (
        retrieval.stub.Search(
            pb.SearchRequest(tenant_id="tenant-b", collection=collection, query="plants")
        ),
        retrieval.stub.ListDocuments(
            pb.ListDocumentsRequest(tenant_id="tenant-b", collection=collection)
        ),
        retrieval.stub.DeleteDocument(
            pb.DeleteDocumentRequest(
                tenant_id="tenant-b", collection=collection, document_id="secret"
            )
        ),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error.details() == f"collection '{collection}' not found"

    # Tenant b may use the same name; it gets a collection of its own.
    await upsert(retrieval, collection, [("public", VOLCANO, None)], tenant="tenant-b")
    b_hits = await search(retrieval, collection, "plants and sunlight", top_k=10, tenant="tenant-b")
    assert {hit.document_id for hit in b_hits} == {"public"}
    a_hits = await search(retrieval, collection, "volcano lava", top_k=10, tenant="tenant-a")
    assert {hit.document_id for hit in a_hits} == {"secret"}
    assert [d.id for d in await listed(retrieval, collection, tenant="tenant-b")] == ["public"]
    assert [d.id for d in await listed(retrieval, collection, tenant="tenant-a")] == ["secret"]
    # A filter cannot reach across either: tenant_id is not a metadata key of anything.
    assert await search(retrieval, collection, "x", filter={"tenant_id": "tenant-a"}) == []


async def test_metadata_filter(retrieval: Retrieval) -> None:
    collection = new_collection()
    await upsert(
        retrieval,
        collection,
        [
            ("en-2019", PHOTOSYNTHESIS, {"lang": "en", "year": 2019, "tag": "a"}),
            ("en-2023", ESPRESSO, {"lang": "en", "year": 2023, "tag": "b"}),
            ("de-2024", VOLCANO, {"lang": "de", "year": 2024, "tag": "c"}),
        ],
    )

    async def ids(spec: dict[str, Any]) -> set[str]:
        hits = await search(retrieval, collection, "plants", top_k=10, filter=spec)
        return {hit.document_id for hit in hits}

    assert await ids({}) == {"en-2019", "en-2023", "de-2024"}
    assert await ids({"lang": "de"}) == {"de-2024"}
    assert await ids({"lang": {"$ne": "de"}}) == {"en-2019", "en-2023"}
    assert await ids({"year": {"$gte": 2023}}) == {"en-2023", "de-2024"}
    assert await ids({"tag": {"$in": ["a", "c"]}}) == {"en-2019", "de-2024"}
    assert await ids({"$and": [{"lang": "en"}, {"year": {"$gt": 2020}}]}) == {"en-2023"}
    assert await ids({"$or": [{"tag": "a"}, {"year": {"$lt": 2000}}]}) == {"en-2019"}
    assert await ids({"lang": 'en" or metadata["lang"] != "x'}) == set()
    # The best match overall is filtered out; the filter wins over similarity.
    hits = await search(retrieval, collection, "plants", top_k=1, filter={"lang": "de"})
    assert [hit.document_id for hit in hits] == ["de-2024"]


def _nested(levels: int) -> dict[str, Any]:
    """``{"a": {"a": ... 1}}``, ``levels`` objects deep."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    assert isinstance(value, dict)
    return value


BAD_UPSERTS: list[tuple[str, dict[str, Any], str]] = [
    ("empty tenant", {"tenant_id": ""}, "tenant_id must not be empty"),
    ("long tenant", {"tenant_id": "t" * 129}, "tenant_id must be at most 128 characters"),
    ("bad collection", {"collection": "bad name!"}, "collection 'bad name!' is invalid"),
    ("leading dash", {"collection": "-abc"}, "collection '-abc' is invalid"),
    ("long collection", {"collection": "c" * 65}, "is invalid"),
    ("empty collection", {"collection": ""}, "collection must not be empty"),
    ("no documents", {"documents": []}, "documents must not be empty"),
    ("empty text", {"documents": [("d", "", None)]}, "documents[0].text must not be empty"),
    (
        "blank text",
        {"documents": [("d", "x", None), ("e", " \n\t ", None)]},
        "documents[1].text must not be empty",
    ),
    ("empty id", {"documents": [("", "text", None)]}, "documents[0].id must not be empty"),
    (
        "long id",
        {"documents": [("i" * 257, "text", None)]},
        "documents[0].id must be at most 256 characters",
    ),
    (
        "control id",
        {"documents": [("a\nb", "text", None)]},
        "documents[0].id must not contain control characters",
    ),
    (
        "duplicate id",
        {"documents": [("d", "one", None), ("d", "two", None)]},
        "documents[1].id repeats the id of an earlier document",
    ),
    (
        "too many",
        {"documents": [(f"d{i}", "text", None) for i in range(101)]},
        "documents has 101 items; at most 100",
    ),
    (
        "huge metadata",
        {"documents": [("d", "text", {"blob": "x" * 40_000})]},
        "documents[0].metadata is",
    ),
    # The gateway's limits on free-form JSON, enforced again for internal callers.
    (
        "deep metadata",
        {"documents": [("d", "text", _nested(17))]},
        "documents[0].metadata.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a is nested deeper than 16 levels",
    ),
    (
        "metadata not finite",
        {"documents": [("d", "text", {"x": [1.0, float("nan")]})]},
        "documents[0].metadata.x[1] is not a finite number",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "message"), BAD_UPSERTS, ids=[c[0] for c in BAD_UPSERTS]
)
async def test_bad_upserts_are_invalid_argument(
    retrieval: Retrieval, case: str, change: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {
        "tenant_id": TENANT,
        "collection": new_collection(),
        "documents": [("d", "text", None)],
    }
    fields.update(change)
    request = pb.UpsertDocumentsRequest(
        tenant_id=fields["tenant_id"],
        collection=fields["collection"],
        documents=[
            pb.Document(id=i, text=t, metadata=struct(m) if m else None)
            for i, t, m in fields["documents"]
        ],
    )
    error = await rpc_error(retrieval.stub.UpsertDocuments(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert message in (error.details() or ""), (case, error.details())
    # Nothing was created.
    if fields["collection"] and fields["tenant_id"] and case != "bad collection":
        ref = CollectionRef(fields["tenant_id"], fields["collection"])
        assert await retrieval.store.dimension(ref) is None


async def test_document_text_limit(retrieval: Retrieval) -> None:
    limit = retrieval.settings.max_document_chars
    request = pb.UpsertDocumentsRequest(
        tenant_id=TENANT,
        collection=new_collection(),
        documents=[pb.Document(id="big", text="x" * (limit + 1))],
    )
    error = await rpc_error(retrieval.stub.UpsertDocuments(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"documents[0].text has {limit + 1} characters" in (error.details() or "")


@pytest.fixture(scope="module")
async def searchable(retrieval: Retrieval) -> str:
    collection = new_collection()
    await upsert(retrieval, collection, [("doc", ESPRESSO, {"lang": "en"})])
    return collection


BAD_SEARCHES: list[tuple[str, dict[str, Any], str]] = [
    ("top_k too large", {"top_k": 10_000}, "top_k must be between 1 and 100 (got 10000)"),
    ("top_k 101", {"top_k": 101}, "top_k must be between 1 and 100"),
    ("empty query", {"query": ""}, "query must not be empty"),
    ("blank query", {"query": "  \n"}, "query must not be empty"),
    ("long query", {"query": "q" * 9000}, "query must be at most 8192 characters"),
    ("bad collection", {"collection": "no/slashes"}, "collection 'no/slashes' is invalid"),
    ("empty tenant", {"tenant_id": ""}, "tenant_id must not be empty"),
    ("bad filter key", {"filter": {'lang"] or 1==1 or ["': "x"}}, "metadata keys must match"),
    ("unknown operator", {"filter": {"lang": {"$regex": "e.*"}}}, "filter.lang.$regex"),
    ("null value", {"filter": {"lang": None}}, "filter.lang: expected a string"),
    ("empty $in", {"filter": {"lang": {"$in": []}}}, "filter.lang.$in: list must not be empty"),
    ("deep filter", {"filter": _nested(17)}, "is nested deeper than 16 levels"),
    (
        "infinite filter value",
        {"filter": {"year": {"$gt": float("inf")}}},
        "filter.year.$gt is not a finite number",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "message"), BAD_SEARCHES, ids=[c[0] for c in BAD_SEARCHES]
)
async def test_bad_searches_are_invalid_argument(
    retrieval: Retrieval, searchable: str, case: str, change: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {"tenant_id": TENANT, "collection": searchable, "query": "coffee"}
    fields.update(change)
    spec = fields.pop("filter", None)
    request = pb.SearchRequest(**fields)
    if spec is not None:
        request.filter.CopyFrom(struct(spec))
    error = await rpc_error(retrieval.stub.Search(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert message in (error.details() or ""), (case, error.details())


async def test_other_bad_requests(retrieval: Retrieval, searchable: str) -> None:
    error = await rpc_error(
        retrieval.stub.ListDocuments(
            pb.ListDocumentsRequest(tenant_id=TENANT, collection=searchable, limit=1001)
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "limit must be at most 1000 (got 1001)"
    error = await rpc_error(
        retrieval.stub.DeleteDocument(
            pb.DeleteDocumentRequest(tenant_id=TENANT, collection=searchable, document_id="")
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "document_id must not be empty"


async def test_unknown_collection_is_not_found(retrieval: Retrieval) -> None:
    name = new_collection()
    for call in (
        retrieval.stub.Search(pb.SearchRequest(tenant_id=TENANT, collection=name, query="q")),
        retrieval.stub.ListDocuments(pb.ListDocumentsRequest(tenant_id=TENANT, collection=name)),
        retrieval.stub.DeleteDocument(
            pb.DeleteDocumentRequest(tenant_id=TENANT, collection=name, document_id="d")
        ),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error.details() == f"collection '{name}' not found"


async def test_embedding_down_is_unavailable_and_writes_nothing(
    retrieval: Retrieval, retrieval_no_embedding: Retrieval
) -> None:
    down = retrieval_no_embedding
    # A new collection is not created.
    fresh = new_collection()
    error = await rpc_error(upsert(down, fresh, [("doc", ESPRESSO, None)]))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert (error.details() or "").startswith("embedding service unavailable")
    assert (await rpc_error(listed(retrieval, fresh))).code() == grpc.StatusCode.NOT_FOUND

    # An existing document keeps its chunks; a new one is not added.
    collection = new_collection()
    ref = CollectionRef(TENANT, collection)
    [before] = await upsert(retrieval, collection, [("doc", long_text("glacier", 12), None)])
    error = await rpc_error(
        upsert(down, collection, [("doc", ESPRESSO, None), ("new", VOLCANO, None)])
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert await retrieval.store.count_chunks(ref, "doc") == before.chunks
    assert [(d.id, d.chunks) for d in await listed(retrieval, collection)] == [
        ("doc", before.chunks)
    ]
    hits = await search(retrieval, collection, "glacier story", top_k=100)
    assert all("glacier story" in hit.text for hit in hits)

    # Search needs the query vector; listing and validation do not need embedding.
    error = await rpc_error(search(down, collection, "glacier"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert [d.id for d in await listed(down, collection)] == ["doc"]
    error = await rpc_error(upsert(down, collection, [("doc", " ", None)]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_collection_locks_exclude_writers_and_are_dropped_once_unused() -> None:
    """Issue 28: the per-collection write locks hold only collections being written."""
    import gc

    from aimesh_retrieval.servicer import CollectionLocks

    locks = CollectionLocks()
    order: list[str] = []

    async def write(name: str, label: str) -> None:
        async with locks.get(name):
            order.append(f"{label} in")
            await asyncio.sleep(0.01)
            order.append(f"{label} out")

    await asyncio.gather(write("c", "a"), write("c", "b"))
    assert order == ["a in", "a out", "b in", "b out"]  # one writer at a time
    for index in range(1000):  # a thousand collections created, written and deleted
        await write(f"temporary-{index}", "t")
    gc.collect()
    assert len(locks) == 0
    held = locks.get("c")
    assert locks.get("c") is held  # while referenced, every writer gets the same lock
    assert len(locks) == 1
