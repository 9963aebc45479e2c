"""Filters and row mapping of the document writes: replacing a document's chunks and
reading what chunk 0 says about it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aimesh_retrieval.filters import quote
from aimesh_retrieval.store.model import StoredDocument

WRITE_BATCH_ROWS = 256
# Stale-chunk deletes combine documents into one expression up to this many characters (a
# delete by expression costs a server one query: one call per write, not one per document).
DELETE_EXPR_CHARS = 60_000
# The fields of chunk 0 that describe its document.
DOCUMENT_FIELDS = ["document_id", "chunk_count", "content_hash", "metadata"]


def document_filter(document_id: str) -> str:
    """Every chunk of ``document_id``."""
    return f"document_id == {quote(document_id)}"


def first_chunks_filter(document_ids: Iterable[str]) -> str:
    """Chunk 0 of each of ``document_ids``."""
    return f"chunk_index == 0 and document_id in [{', '.join(quote(i) for i in document_ids)}]"


def stale_chunk_filters(counts: Mapping[str, int]) -> list[str]:
    """Filters matching the chunks of each document at or past its new count, documents
    with the same count grouped (``chunk_index >= n and document_id in [...]``), each filter
    at most about DELETE_EXPR_CHARS long."""
    by_count: dict[int, list[str]] = {}
    for document, count in counts.items():
        by_count.setdefault(count, []).append(quote(document))
    filters: list[str] = []
    terms: list[str] = []
    length = 0

    def flush() -> None:
        nonlocal terms, length
        if terms:
            filters.append(" or ".join(terms))
        terms, length = [], 0

    for count, quoted in sorted(by_count.items()):
        ids: list[str] = []
        for item in quoted:
            if ids and length + len(item) > DELETE_EXPR_CHARS:
                terms.append(f"(chunk_index >= {count} and document_id in [{', '.join(ids)}])")
                flush()
                ids = []
            ids.append(item)
            length += len(item) + 2
        terms.append(f"(chunk_index >= {count} and document_id in [{', '.join(ids)}])")
        length += 40
    flush()
    return filters


def stored_document(row: Mapping[str, Any]) -> StoredDocument:
    """A document as its chunk 0 (read with ``DOCUMENT_FIELDS``) describes it."""
    return StoredDocument(
        document_id=row["document_id"],
        chunks=int(row["chunk_count"]),
        content_hash=row["content_hash"],
        metadata=row.get("metadata") or {},
    )
