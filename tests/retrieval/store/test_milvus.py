"""MilvusStore against a real Milvus Lite file (and, slow, the real Milvus server), with
small hand-made vectors.

These tests also run the filter translator's output on Milvus itself, including values
built to break out of a string literal.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from aimesh_common.errors import NotFound
from aimesh_retrieval.config import Settings
from aimesh_retrieval.filters import translate_filter
from aimesh_retrieval.store import (
    AlreadyExists,
    ChunkRow,
    CollectionRef,
    MilvusStore,
    physical_name,
)
from aimesh_retrieval.store.milvus import UnimplementedLiteCall

DIM = 4


@pytest.fixture
def store(retrieval_store: MilvusStore) -> MilvusStore:
    """The session store: Milvus Lite, and (slow) the real Milvus server."""
    return retrieval_store


def new_ref(tenant: str = "tenant-a") -> CollectionRef:
    return CollectionRef(tenant_id=tenant, name=f"c-{uuid.uuid4().hex[:12]}")


def rows(
    document_id: str,
    count: int,
    *,
    content_hash: str = "h1",
    metadata: dict[str, Any] | None = None,
    vector: Sequence[float] = (1.0, 0.0, 0.0, 0.0),
) -> list[ChunkRow]:
    return [
        ChunkRow(
            document_id=document_id,
            chunk_index=index,
            chunk_count=count,
            text=f"{document_id} chunk {index}",
            content_hash=content_hash,
            metadata=metadata or {},
            embedding=list(vector),
        )
        for index in range(count)
    ]


def test_physical_names_are_valid_deterministic_and_distinct() -> None:
    name = physical_name("tenant-a", "docs")
    assert re.fullmatch(r"a_[0-9a-f]{16}_[0-9a-f]{16}", name)
    assert physical_name("tenant-a", "docs") == name
    pairs = [("a", "b"), ("b", "a"), ("a_b", "c"), ("a", "b_c"), ("", "x"), ("tenant-a", "Docs")]
    names = {physical_name(tenant, collection) for tenant, collection in pairs}
    assert len(names) == len(pairs)
    assert name not in names


async def test_missing_collection(store: MilvusStore) -> None:
    ref = new_ref()
    assert await store.dimension(ref) is None
    with pytest.raises(NotFound, match=f"collection '{ref.name}' not found"):
        await store.require(ref)


async def test_create_is_idempotent_and_per_tenant(store: MilvusStore) -> None:
    ref = new_ref()
    await store.create(ref, DIM)
    await store.create(ref, DIM)
    assert await store.require(ref) == DIM
    other_tenant = CollectionRef(tenant_id="tenant-b", name=ref.name)
    assert await store.dimension(other_tenant) is None


async def test_concurrent_creates_of_one_collection_all_succeed(store: MilvusStore) -> None:
    # Jobs for several files uploaded at once into a new collection each create it.
    ref = new_ref()
    metas = await asyncio.gather(*(store.create(ref, DIM) for _ in range(4)))
    assert {meta.dimension for meta in metas} == {DIM}
    await store.write(ref, rows("doc-1", 1))
    assert [doc.document_id for doc in await store.list_documents(ref, 10)] == ["doc-1"]


async def test_concurrent_creates_from_two_replicas_all_succeed(store: MilvusStore) -> None:
    # A second store on the same Milvus: its own lock and cache, like another replica.
    replica = MilvusStore(store._client, server=store.is_server)
    ref = new_ref()
    metas = await asyncio.gather(*(s.create(ref, DIM) for s in (store, replica, store, replica)))
    assert {meta.dimension for meta in metas} == {DIM}
    await replica.write(ref, rows("doc-1", 1))
    hits = await store.search(ref, [1.0, 0.0, 0.0, 0.0], 5, "")
    assert [hit.chunk_id for hit in hits] == ["doc-1#0"]


async def test_exclusive_creates_from_two_replicas_one_wins(store: MilvusStore) -> None:
    replica = MilvusStore(store._client, server=store.is_server)
    ref = new_ref()
    results = await asyncio.gather(
        *(s.create(ref, DIM, exist_ok=False) for s in (store, replica, store, replica)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1, results
    losers = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, AlreadyExists) for r in losers), losers
    assert all(f"collection '{ref.name}' already exists" in str(r) for r in losers)


async def test_write_list_and_stored_documents(store: MilvusStore) -> None:
    ref = new_ref()
    await store.create(ref, DIM)
    await store.write(ref, rows("doc-2", 2, metadata={"lang": "de"}) + rows("doc-1", 3))
    listed = await store.list_documents(ref, 100)
    assert [(doc.document_id, doc.chunks) for doc in listed] == [("doc-1", 3), ("doc-2", 2)]
    assert listed[1].metadata == {"lang": "de"}
    stored = await store.stored_documents(ref, ["doc-1", "missing", "doc-2"])
    assert set(stored) == {"doc-1", "doc-2"}
    assert stored["doc-1"].content_hash == "h1"
    assert await store.list_documents(ref, 1) != []
    assert len(await store.list_documents(ref, 1)) == 1


async def test_rewrite_with_fewer_chunks_leaves_no_stale_rows(store: MilvusStore) -> None:
    ref = new_ref()
    await store.create(ref, DIM)
    await store.write(ref, rows("doc", 5) + rows("keep", 2))
    assert await store.count_chunks(ref, "doc") == 5
    await store.write(ref, rows("doc", 2, content_hash="h2"))
    assert await store.count_chunks(ref, "doc") == 2
    assert await store.count_chunks(ref, "keep") == 2
    stored = await store.stored_documents(ref, ["doc"])
    assert stored["doc"].chunks == 2
    assert stored["doc"].content_hash == "h2"
    hits = await store.search(ref, [1.0, 0.0, 0.0, 0.0], 10, 'document_id == "doc"')
    assert sorted(hit.chunk_id for hit in hits) == ["doc#0", "doc#1"]
    assert all(hit.text.startswith("doc chunk") for hit in hits)


async def test_delete_document(store: MilvusStore) -> None:
    ref = new_ref()
    await store.create(ref, DIM)
    await store.write(ref, rows('odd "id" \\ #1', 3) + rows("other", 1))
    assert await store.delete_document(ref, 'odd "id" \\ #1') == 3
    assert await store.delete_document(ref, 'odd "id" \\ #1') == 0
    assert await store.count_chunks(ref, "other") == 1
    assert [doc.document_id for doc in await store.list_documents(ref, 10)] == ["other"]


async def test_search_orders_by_cosine_similarity(store: MilvusStore) -> None:
    ref = new_ref()
    await store.create(ref, DIM)
    await store.write(
        ref,
        rows("east", 1, vector=(1.0, 0.0, 0.0, 0.0))
        + rows("north", 1, vector=(0.0, 1.0, 0.0, 0.0))
        + rows("north-east", 1, vector=(1.0, 1.0, 0.0, 0.0)),
    )
    hits = await store.search(ref, [0.9, 0.1, 0.0, 0.0], 3, "")
    assert [hit.document_id for hit in hits] == ["east", "north-east", "north"]
    assert hits[0].score > hits[1].score > hits[2].score
    exact = await store.search(ref, [0.0, 2.0, 0.0, 0.0], 1, "")
    assert exact[0].document_id == "north"
    assert exact[0].score == pytest.approx(1.0, abs=1e-5)
    assert exact[0].chunk_index == 0


async def test_reopened_store_finds_existing_collections(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ref = new_ref()
    first = MilvusStore.open(settings)
    await first.create(ref, DIM)
    await first.write(ref, rows("doc", 2))
    await first.close()
    # After a restart Milvus has the collection released; the store must load it.
    second = MilvusStore.open(settings)
    try:
        assert await second.require(ref) == DIM
        hits = await second.search(ref, [1.0, 0.0, 0.0, 0.0], 5, "")
        assert {hit.chunk_id for hit in hits} == {"doc#0", "doc#1"}
    finally:
        await second.close()


TRICKY_VALUES = [
    "en",
    "de",
    'a"b',
    "a\\b",
    'a\\"b',
    'en" or metadata["lang"] != "x',
    'x") or (1 == 1',
    "\\",
]


@pytest.fixture(scope="session")
async def filtered(retrieval_store: MilvusStore) -> CollectionRef:
    """One document per metadata variant, all with the same vector."""
    store = retrieval_store
    ref = new_ref()
    await store.create(ref, DIM)
    documents: list[ChunkRow] = []
    for i, value in enumerate(TRICKY_VALUES):
        documents += rows(f"lang-{i}", 1, metadata={"lang": value, "year": 2018 + i})
    documents += rows("flagged", 1, metadata={"flag": True, "year": 2030, "score": 0.5})
    documents += rows("bare", 1)
    await store.write(ref, documents)
    return ref


async def matching(store: MilvusStore, ref: CollectionRef, spec: dict[str, Any]) -> set[str]:
    hits = await store.search(ref, [1.0, 0.0, 0.0, 0.0], 100, translate_filter(spec))
    return {hit.document_id for hit in hits}


@pytest.mark.parametrize("index", range(len(TRICKY_VALUES)))
async def test_each_string_matches_only_itself(
    store: MilvusStore, filtered: CollectionRef, index: int
) -> None:
    assert await matching(store, filtered, {"lang": TRICKY_VALUES[index]}) == {f"lang-{index}"}


async def test_injection_value_does_not_widen_the_match(
    store: MilvusStore, filtered: CollectionRef
) -> None:
    # If the value escaped its literal, `!= "x"` would match every document with a lang.
    assert await matching(store, filtered, {"lang": 'zz" or metadata["lang"] != "x'}) == set()
    assert await matching(store, filtered, {"lang": "zz\\"}) == set()


async def test_operators_on_milvus(store: MilvusStore, filtered: CollectionRef) -> None:
    assert await matching(store, filtered, {"year": {"$gte": 2024}}) == {
        "lang-6",
        "lang-7",
        "flagged",
    }
    assert await matching(store, filtered, {"year": {"$gt": 2018, "$lte": 2020}}) == {
        "lang-1",
        "lang-2",
    }
    assert await matching(store, filtered, {"year": {"$lt": 2019.5}}) == {"lang-0", "lang-1"}
    assert await matching(store, filtered, {"lang": {"$in": ["en", "de", "fr"]}}) == {
        "lang-0",
        "lang-1",
    }
    # Documents without the key: Milvus Lite leaves them out of $ne, Milvus 2.3 servers
    # include them; the documents that have the key are what the filter language defines.
    ne = await matching(store, filtered, {"lang": {"$ne": "en"}})
    assert ne - {"flagged", "bare"} == {f"lang-{i}" for i in range(1, len(TRICKY_VALUES))}
    assert await matching(store, filtered, {"flag": True}) == {"flagged"}
    assert await matching(store, filtered, {"flag": {"$eq": False}}) == set()
    assert await matching(store, filtered, {"score": 0.5}) == {"flagged"}
    assert await matching(store, filtered, {"year": 2018.0}) == {"lang-0"}
    assert await matching(
        store, filtered, {"$or": [{"lang": "en"}, {"$and": [{"flag": True}, {"year": 2030}]}]}
    ) == {"lang-0", "flagged"}
    assert await matching(store, filtered, {"missing_key": "x"}) == set()


def _segments(data_dir: Path) -> int:
    """Milvus Lite's flushed segments (data files) under ``data_dir``."""
    return len(list((data_dir / "milvus.db").rglob("data_*.parquet")))


async def test_milvus_lite_flushes_a_collection_every_few_hundred_changed_rows(
    tmp_path: Path,
) -> None:
    """Issue 28: Milvus Lite scans its unflushed rows on every search and flushes only at
    128 MiB; the store flushes after ``milvus_lite_flush_rows`` written or deleted rows."""
    store = MilvusStore.open(Settings(data_dir=tmp_path, milvus_lite_flush_rows=10))
    try:
        ref = new_ref()
        await store.create(ref, DIM)
        await store.write(ref, rows("doc-1", 6))
        assert _segments(tmp_path) == 0  # 6 rows: still in the write buffer
        await store.write(ref, rows("doc-2", 6))
        assert _segments(tmp_path) == 1  # 12 rows: flushed into a segment
        await store.write(ref, rows("doc-3", 3))
        assert await store.delete_document(ref, "doc-1") == 6  # 3 + 6 changed rows
        assert _segments(tmp_path) == 1
        await store.write(ref, rows("doc-4", 1))  # 10: flushed again
        assert _segments(tmp_path) >= 2
        hits = await store.search(ref, [1.0, 0.0, 0.0, 0.0], 20, "")
        assert {hit.document_id for hit in hits} == {"doc-2", "doc-3", "doc-4"}
    finally:
        await store.close()


async def test_milvus_lite_flushes_a_slowly_written_collection_by_age(tmp_path: Path) -> None:
    """Issue 28: a collection written a document at a time is flushed at the first write a
    ``milvus_lite_flush_seconds`` or more after the first unflushed one, however few rows
    are waiting, so its searches never scan a buffer that refilled for tens of minutes."""
    settings = Settings(
        data_dir=tmp_path, milvus_lite_flush_rows=1000, milvus_lite_flush_seconds=0.5
    )
    store = MilvusStore.open(settings)
    try:
        ref = new_ref()
        await store.create(ref, DIM)
        await store.write(ref, rows("doc-1", 1))
        await store.write(ref, rows("doc-2", 1))
        assert _segments(tmp_path) == 0  # 2 rows, young: still in the write buffer
        await asyncio.sleep(0.6)
        await store.write(ref, rows("doc-3", 1))
        assert _segments(tmp_path) == 1  # the first waited past the age bound: all flushed
        await store.write(ref, rows("doc-4", 1))
        assert _segments(tmp_path) == 1  # a new buffer, young again
        hits = await store.search(ref, [1.0, 0.0, 0.0, 0.0], 20, "")
        assert {hit.document_id for hit in hits} == {"doc-1", "doc-2", "doc-3", "doc-4"}
    finally:
        await store.close()


async def test_milvus_lite_logs_no_traceback_for_calls_it_does_not_implement(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pymilvus asks Milvus Lite for AllocTimestamp when a collection is created; Lite's
    embedded server answers UNIMPLEMENTED and logged a traceback at ERROR each time."""
    caplog.set_level(logging.ERROR)
    store = MilvusStore.open(Settings(data_dir=tmp_path))
    ref = new_ref()
    try:
        await store.create(ref, DIM)
        await store.write(ref, rows("doc", 2))
        assert await store.count_chunks(ref, "doc") == 2
    finally:
        await store.close()
    assert "Method not implemented" not in caplog.text, caplog.text
    # The filter drops that one record and nothing else logged there.
    drop = UnimplementedLiteCall()
    record = logging.LogRecord("grpc._server", logging.ERROR, "", 0, "x", None, None)
    assert drop.filter(record)
    for error, kept in (
        (NotImplementedError("Method not implemented!"), False),
        (NotImplementedError("something else"), True),
        (RuntimeError("Method not implemented!"), True),
    ):
        record.exc_info = (type(error), error, None)
        assert drop.filter(record) is kept
