"""Chunks that keep their context: the document title and heading path of each chunk go
into what is embedded and indexed, and come back on each hit, outside its text."""

from __future__ import annotations

import math
from typing import Any

import pytest

from aimesh.retrieval.v1 import retrieval_pb2 as pb
from aimesh_common.embedding_client import EmbeddingClient
from aimesh_retrieval.chunking import (
    ChunkContext,
    Chunker,
    ChunkingConfig,
    chunk_starts,
    count_tokens,
    headings,
    sections,
)
from aimesh_retrieval.servicer import chunk_contexts
from aimesh_retrieval.store import CollectionRef
from aimesh_retrieval.store.collections import meta_from
from tests.retrieval.conftest import Retrieval, new_collection
from tests.retrieval.test_servicer import TENANT, upsert

GUIDE = """# Harbor Guide

Welcome to the guide of the harbor town and its services for visiting sailors.

## Mooring

Visiting boats tie up at the north quay. The harbor master assigns berths on arrival and
collects the daily fee in the office next to the fuel dock.

### Winter berths

From November to March the inner basin is closed and boats stay in the covered shed.

## Provisions

```
# not a heading: a comment inside a code fence
make groceries
```

The bakery opens at six and sells bread, rolls and cakes; the market sells fish daily.
"""


def test_headings_are_read_outside_code_fences() -> None:
    found = [(level, title) for _, level, title in headings(GUIDE)]
    assert found == [
        (1, "Harbor Guide"),
        (2, "Mooring"),
        (3, "Winter berths"),
        (2, "Provisions"),
    ]
    assert headings("## Closed ##\ntext\n#not a heading\n####### seven") == [(0, 2, "Closed")]


def test_each_chunk_gets_the_heading_path_at_its_start() -> None:
    chunker = Chunker(24, 0, markdown=True)
    chunks = chunker.split(GUIDE)
    paths = sections(GUIDE, chunks)
    by_text = dict(zip(chunks, paths, strict=True))
    winter = next(c for c in chunks if "inner basin" in c)
    bakery = next(c for c in chunks if "bakery" in c)
    welcome = next(c for c in chunks if c.startswith("Welcome") or "Welcome" in c)
    assert by_text[winter] == "Harbor Guide > Mooring > Winter berths"
    # A level-2 heading closes the level-3 one; the fenced comment is no heading.
    assert by_text[bakery] == "Harbor Guide > Provisions"
    assert by_text[welcome] == "Harbor Guide"
    # The title already says the first heading: it is not repeated in the path.
    assert sections(GUIDE, chunks, title="harbor guide")[chunks.index(winter)] == (
        "Mooring > Winter berths"
    )


def test_chunk_starts_follow_overlapping_chunks() -> None:
    text = " ".join(f"word{i}" for i in range(300))
    chunks = Chunker(40, 10).split(text)
    starts = chunk_starts(text, chunks)
    assert [text[s : s + len(c)] for s, c in zip(starts, chunks, strict=True)] == chunks
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts)


def test_header_is_one_line_within_its_token_budget() -> None:
    assert ChunkContext("", "").header() == ""
    assert ChunkContext("Guide", "").header() == "Guide"
    assert ChunkContext("Guide", "A > B").header() == "Guide > A > B"
    assert ChunkContext("Two\nlines", "x").header() == "Two lines > x"
    long = ChunkContext("A very long title " * 20, "section")
    header = long.header(10)
    assert header.endswith("…")
    assert count_tokens(header[:-1]) <= 10
    assert long.header(0) == ""
    # The default chunks leave the model room for 48 tokens of context; a full-size
    # chunk leaves none, and without context there is none.
    assert ChunkingConfig(context=True).context_tokens == 48
    assert ChunkingConfig(chunk_size=254, chunk_overlap=0, context=True).context_tokens == 0
    assert ChunkingConfig().context_tokens == 0


def test_headings_are_read_only_from_documents_that_have_them() -> None:
    text = "# set the path first\nexport PATH=/opt/bin:$PATH\n\nThen run the tool."
    config = ChunkingConfig(context=True)
    chunks = Chunker.from_config(config).split(text)
    plain = chunk_contexts(text, chunks, {"title": "Setup notes"}, config)
    assert plain is not None
    assert [(c.title, c.section, c.header) for c in plain] == [("Setup notes", "", "Setup notes")]
    markdown = chunk_contexts(text, chunks, {"title": "Setup notes", "type": "md"}, config)
    assert markdown is not None
    assert markdown[0].section == "set the path first"
    assert chunk_contexts(text, chunks, {"title": "x"}, ChunkingConfig()) is None


def test_collections_without_context_fields_read_as_without_context() -> None:
    description: dict[str, Any] = {
        "fields": [
            {"name": "text"},
            {"name": "embedding", "params": {"dim": 384}},
        ],
        # Settings written before chunk context existed: no "context" key.
        "properties": {
            "aimesh.settings": '{"aimesh": 1, "chunking": {"chunk_size": 200, '
            '"chunk_overlap": 32, "markdown": false, "unit": "tokens"}, "index": '
            '{"index_type": "FLAT", "hnsw_m": 16, "hnsw_ef_construction": 200}}'
        },
    }
    assert not meta_from("old", description).context
    description["fields"].append({"name": "body_start"})
    assert meta_from("new", description).context
    # Settings of a newer version with keys this one does not know still load.
    description["properties"]["aimesh.settings"] = description["properties"][
        "aimesh.settings"
    ].replace('"unit": "tokens"', '"unit": "tokens", "later": 1')
    meta = meta_from("newer", description)
    assert meta.chunking is not None
    assert meta.chunking.chunk_size == 200


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def test_hits_carry_title_and_section_and_the_index_sees_them(
    retrieval: Retrieval,
) -> None:
    collection = new_collection()
    results = await upsert(
        retrieval,
        collection,
        [
            ("guide.md", GUIDE, {"title": "Harbor Guide", "type": "md"}),
            ("notes", "The lighthouse keeper polishes the lens every month.", None),
        ],
    )
    reply = await retrieval.stub.Search(
        pb.SearchRequest(
            tenant_id=TENANT, collection=collection, query="covered shed in winter", top_k=1
        )
    )
    [hit] = reply.chunks
    assert hit.document_id == "guide.md"
    assert hit.title == "Harbor Guide"
    assert hit.section == "Mooring > Winter berths"
    # The hit's text is the chunk's own: the header is not shown as body text.
    assert not hit.text.startswith("Harbor Guide >")
    assert "inner basin" in hit.text

    if await retrieval.store.full_text_supported():
        # BM25 indexes the header: the title's word, in the text of the first chunk
        # only, finds every chunk of the document.
        reply = await retrieval.stub.Search(
            pb.SearchRequest(
                tenant_id=TENANT,
                collection=collection,
                query="guide",
                top_k=20,
                mode=pb.SEARCH_MODE_BM25,
            )
        )
        assert sum("guide" in chunk.text.lower() for chunk in reply.chunks) == 1
        assert results[0].chunks > 3
        assert len(reply.chunks) == results[0].chunks

    # What was embedded: the header, a blank line, then the chunk's text.
    ref = CollectionRef(TENANT, collection)
    rows = await retrieval.store._run(
        retrieval.store._client.query,
        ref.physical,
        filter=f'id == "{hit.chunk_id}"',
        output_fields=["text", "body_start", "embedding"],
    )
    [row] = rows
    expected = f"Harbor Guide > Mooring > Winter berths\n\n{hit.text}"
    assert row["text"] == expected
    assert row["body_start"] == len(expected) - len(hit.text)
    embedder = EmbeddingClient.connect(retrieval.settings.embedding_service_addr)
    try:
        [with_header, without] = await embedder.embed([expected, hit.text])
    finally:
        await embedder.close()
    stored = [float(x) for x in row["embedding"]]
    assert cosine(stored, list(with_header)) > 0.999
    assert cosine(stored, list(without)) < 0.99

    # A document without metadata has no title: its hits carry none.
    reply = await retrieval.stub.Search(
        pb.SearchRequest(tenant_id=TENANT, collection=collection, query="lighthouse", top_k=1)
    )
    assert reply.chunks[0].document_id == "notes"
    assert (reply.chunks[0].title, reply.chunks[0].section) == ("", "")


async def test_a_collection_can_turn_context_off(retrieval: Retrieval) -> None:
    collection = new_collection()
    info = await retrieval.stub.CreateCollection(
        pb.CreateCollectionRequest(
            tenant_id=TENANT,
            collection=collection,
            chunking=pb.ChunkingSettings(markdown=True, context=False),
        )
    )
    assert not info.chunking.context
    await upsert(retrieval, collection, [("guide.md", GUIDE, {"title": "Harbor Guide"})])
    reply = await retrieval.stub.Search(
        pb.SearchRequest(tenant_id=TENANT, collection=collection, query="covered shed", top_k=1)
    )
    [hit] = reply.chunks
    assert (hit.title, hit.section) == ("", "")
    ref = CollectionRef(TENANT, collection)
    [row] = await retrieval.store._run(
        retrieval.store._client.query,
        ref.physical,
        filter=f'id == "{hit.chunk_id}"',
        output_fields=["text"],
    )
    assert row["text"] == hit.text
    listed = await retrieval.stub.ListCollections(pb.ListCollectionsRequest(tenant_id=TENANT))
    by_name = {c.name: c for c in listed.collections}
    assert not by_name[collection].chunking.context


async def test_context_is_on_by_default_and_reported(retrieval: Retrieval) -> None:
    collection = new_collection()
    info = await retrieval.stub.CreateCollection(
        pb.CreateCollectionRequest(tenant_id=TENANT, collection=collection)
    )
    assert info.chunking.context


@pytest.mark.parametrize("value", [True, False])
async def test_context_survives_a_store_restart(retrieval: Retrieval, value: bool) -> None:
    collection = new_collection()
    await retrieval.stub.CreateCollection(
        pb.CreateCollectionRequest(
            tenant_id=TENANT,
            collection=collection,
            chunking=pb.ChunkingSettings(context=value),
        )
    )
    ref = CollectionRef(TENANT, collection)
    retrieval.store._ready.pop(ref.physical, None)  # read back from Milvus, as after a restart
    meta = await retrieval.store.require_meta(ref)
    assert meta.context is value
    await upsert(
        retrieval,
        collection,
        [("d", "Some text about ropes.", {"title": "Ropes"}), ("e", "Knots.", {"title": 3.5})],
    )
    reply = await retrieval.stub.Search(
        pb.SearchRequest(tenant_id=TENANT, collection=collection, query="ropes", top_k=2)
    )
    titles = {hit.document_id: hit.title for hit in reply.chunks}
    # A title that is not a string is no title.
    assert titles == ({"d": "Ropes", "e": ""} if value else {"d": "", "e": ""})
