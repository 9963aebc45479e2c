"""The filters of document writes, checked by hand (they run on Milvus in test_milvus)."""

from __future__ import annotations

import re

import pytest

from aimesh_retrieval.store import writes
from aimesh_retrieval.store.writes import document_filter, first_chunks_filter, stale_chunk_filters


def test_stale_chunk_filters_group_documents_by_count(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {f"doc-{i}": 1 + i % 3 for i in range(30)} | {'quote"d': 2}
    [one] = stale_chunk_filters(counts)  # short ids: one delete call for the whole write
    assert one.count("chunk_index >=") == 3
    monkeypatch.setattr(writes, "DELETE_EXPR_CHARS", 40)
    many = stale_chunk_filters(counts)
    assert len(many) > 3
    assert all(len(expr) < 40 + 120 for expr in many)
    # Every document exactly once, with its own count.
    seen: dict[str, int] = {}
    for expr in many:
        for count, ids in re.findall(r"chunk_index >= (\d+) and document_id in \[(.*?)\]\)", expr):
            for doc in re.findall(r'"((?:[^"\\]|\\.)*)"', ids):
                assert doc.replace('\\"', '"') not in seen
                seen[doc.replace('\\"', '"')] = int(count)
    assert seen == counts


def test_document_filters_quote_the_ids() -> None:
    assert document_filter('a"b') == 'document_id == "a\\"b"'
    assert first_chunks_filter(["x", "y"]) == 'chunk_index == 0 and document_id in ["x", "y"]'
