"""Prometheus metrics of the retrieval service (next to the shared per-method gRPC ones)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DOCUMENTS_UPSERTED = Counter(
    "aimesh_retrieval_documents_upserted_total",
    "Documents received by UpsertDocuments, by outcome (created, replaced, unchanged).",
    ["outcome"],
)
CHUNKS_UPSERTED = Counter(
    "aimesh_retrieval_chunks_upserted_total",
    "Chunks embedded and written (unchanged documents are not counted).",
)
CHUNKS_DELETED = Counter(
    "aimesh_retrieval_chunks_deleted_total",
    "Chunks removed by DeleteDocument.",
)
SEARCH_SECONDS = Histogram(
    "aimesh_retrieval_search_seconds",
    "Time of a Search call, by stage (embed: the query vector, milvus: the vector search, "
    "rerank: scoring the candidates with the reranker).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RERANKED = Counter(
    "aimesh_retrieval_reranked_candidates_total",
    "Search candidates scored by a reranker, by reranker (embedding, http).",
    ["reranker"],
)
