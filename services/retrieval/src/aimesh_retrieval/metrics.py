"""Prometheus metrics of the retrieval service (next to the shared per-method gRPC ones)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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

# Ingestion jobs. Counters and the duration are this process's; JOBS counts the rows of the
# shared job table (every replica reports the same figures: use max() over replicas).
JOBS = Gauge(
    "aimesh_retrieval_jobs",
    "Ingestion jobs in the job table, by state (queued, running, succeeded, failed); "
    "refreshed by each runner every few seconds.",
    ["state"],
)
JOBS_SUBMITTED = Counter(
    "aimesh_retrieval_jobs_submitted_total",
    "Ingestion jobs accepted by SubmitIngestJob.",
)
JOBS_FINISHED = Counter(
    "aimesh_retrieval_jobs_finished_total",
    "Ingestion jobs this process finished, by outcome (succeeded, failed).",
    ["outcome"],
)
JOB_FAILURES = Counter(
    "aimesh_retrieval_job_failures_total",
    "Failed attempts of ingestion jobs, by reason: unavailable (a backend was down; "
    "retried until the attempts run out), invalid (the job cannot succeed), internal.",
    ["reason"],
)
JOB_CHUNKS_EMBEDDED = Counter(
    "aimesh_retrieval_job_chunks_embedded_total",
    "Chunks of the documents ingestion jobs stored (an unchanged document's chunks are "
    "counted but not embedded again).",
)
JOB_SECONDS = Histogram(
    "aimesh_retrieval_job_duration_seconds",
    "Time one run of an ingestion job took in this process, by outcome (succeeded, "
    "failed, retry: stopped to be retried).",
    ["outcome"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
RERANKED = Counter(
    "aimesh_retrieval_reranked_candidates_total",
    "Search candidates scored by a reranker, by reranker (embedding, http).",
    ["reranker"],
)
MALLOC_TRIM_SECONDS = Histogram(
    "aimesh_retrieval_malloc_trim_seconds",
    "malloc_trim calls (AIMESH_MALLOC_TRIM_SECONDS) and how long each took.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
