"""Settings of the retrieval service (environment variables with the ``AIMESH_`` prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from aimesh_common.memory import MAX_MMAP_THRESHOLD_KIB
from aimesh_common.settings import GrpcServiceSettings, service_addr
from aimesh_retrieval.chunking import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS, MAX_CHUNK_TOKENS
from aimesh_retrieval.jobs import BATCH_CHUNKS


class Settings(GrpcServiceSettings):
    """Where the service listens, where Milvus is, and how documents are chunked."""

    # populate_by_name lets tests pass embedding_service_addr=... next to the env aliases.
    model_config = SettingsConfigDict(populate_by_name=True)

    port: int = Field(50052, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int | None = Field(
        9102, ge=0, le=65535, description="Prometheus port; unset disables it, 0 picks a free one."
    )
    data_dir: Path = Field(
        Path(".aimesh"), description="Local state; holds the Milvus Lite file by default."
    )
    milvus_uri: str = Field(
        "",
        description=(
            "Empty: Milvus Lite file <data_dir>/milvus.db. http(s)://host:19530: a Milvus server."
        ),
    )
    milvus_token: SecretStr | None = Field(
        None, description="Milvus server token ('user:password' or an API key)."
    )
    milvus_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="Deadline of one Milvus call."
    )
    milvus_workers: int = Field(
        4, ge=1, le=64, description="Threads that run the synchronous Milvus client."
    )
    milvus_lite_flush_rows: int = Field(
        256,
        ge=0,
        le=1_000_000,
        description="Milvus Lite only: flush a collection's write buffer (its memtable, which "
        "every search scans row by row) into an indexed segment once this many rows were "
        "written or deleted since the last flush. Milvus Lite itself flushes only at 128 MiB, "
        "so a collection that grows slowly is searched ever slower (issue 28); 0 leaves it to "
        "Milvus Lite.",
    )
    milvus_lite_flush_seconds: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="Milvus Lite only: also flush at a write this many seconds or more after "
        "the first unflushed one, so that a collection written a few documents at a time "
        "does not scan a buffer that refills for tens of minutes (searches grew slower "
        "until each flush and fell back after it); 0 flushes by rows only.",
    )
    malloc_mmap_threshold_kib: int = Field(
        128,
        ge=0,
        le=MAX_MMAP_THRESHOLD_KIB,
        description="Memory blocks of at least this many KiB are mapped for the call that "
        "needs them and handed back to the OS when freed (glibc's M_MMAP_THRESHOLD, fixed at "
        "start). With glibc's own default, which raises the threshold as large blocks are "
        "freed, Milvus Lite's arrays for writes, flushes and searches stayed resident and the "
        "process kept growing with its stored chunks (+125 MiB after 4,000 single-chunk "
        "upserts and still rising, against +94 MiB and level with it fixed; search latency "
        "unchanged). 0 keeps glibc's dynamic default.",
    )
    blas_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="Threads of the BLAS library (OpenBLAS, under NumPy) that Milvus Lite's "
        "exact search multiplies with; set at start. OpenBLAS splits a product over all cores "
        "once a segment holds about 1,150 live chunks of 384 dimensions, and its threads "
        "spin between calls: per search the same time and 2 to 7 times the CPU (0.7 -> 4.4 "
        "ms at 2,000 chunks, 67 -> 125 ms at 100,000), CPU that concurrent searches and a "
        "co-located embedding service then lack. Searches run in parallel across requests "
        "instead. 0 keeps the library's default (one thread per core).",
    )
    arrow_memory_pool: Literal["system", "mimalloc", "jemalloc"] = Field(
        "system",
        description="The allocator of Arrow, which Milvus Lite writes, flushes, merges and "
        "reads its segments with (read from the environment at start, before Arrow loads). "
        "Arrow's own default, mimalloc, kept freed pages in the heaps of the threads that "
        "used them until those threads allocated again: the service held 216-250 MiB of "
        "anonymous memory in a 10-minute soak, stepping by up to 20 MiB at Milvus Lite's "
        "flushes and merges, against 161-170 MiB and level with the system allocator "
        "(glibc, whose large blocks go back to the OS at once: "
        "AIMESH_MALLOC_MMAP_THRESHOLD_KIB); search latency the same.",
    )
    malloc_trim_seconds: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Every this many seconds, hand the allocator's free memory back to the "
        "OS (glibc's malloc_trim, on a worker thread): what Milvus Lite and the handlers "
        "freed below the mmap threshold stays resident in glibc's arenas until reused. "
        "0 never trims.",
    )
    hnsw_search_ef: int = Field(
        128,
        ge=8,
        le=4096,
        description="HNSW search breadth (ef; at least top_k): higher is slower and more exact. "
        "128 gave recall@10 0.97 against exact search at 100,000 chunks (64: 0.91).",
    )
    milvus_search_consistency: Literal["Session", "Strong", "Bounded", "Eventually"] = Field(
        "Session",
        description=(
            "Consistency level of searches on a Milvus server (other reads stay Strong: the "
            "write path depends on them). Session (default) "
            "sees this process's own writes; every upsert, delete and ingestion job also "
            "waits, before it reports success, until its writes are searchable from any "
            "replica. Strong makes every search wait for the server's clock (about 200 ms on "
            "Milvus 2.3)."
        ),
    )
    embedding_service_addr: str = service_addr("EMBEDDING_SERVICE_ADDR", "localhost:50051")
    embed_batch_size: int = Field(
        64, ge=1, le=2048, description="Chunks per Embed call to the embedding service."
    )
    embed_concurrency: int = Field(
        2, ge=1, le=32, description="Embed calls one upsert keeps in flight at once."
    )
    embed_timeout_seconds: float = Field(
        60.0, gt=0, le=600, description="Deadline of one Embed call."
    )
    chunk_size: int = Field(
        DEFAULT_CHUNK_TOKENS,
        ge=1,
        le=MAX_CHUNK_TOKENS,
        description=(
            "Default longest chunk of new collections, in tokens of the embedding model "
            "(all-MiniLM-L6-v2 sees 256 including two special tokens)."
        ),
    )
    chunk_overlap: int = Field(
        DEFAULT_OVERLAP_TOKENS, ge=0, description="Default tokens shared by neighbouring chunks."
    )
    chunk_context: bool = Field(
        True,
        description=(
            "New collections carry each chunk's document title and Markdown heading path "
            "into its embedding and BM25 text (hits return them as title and section)."
        ),
    )
    hybrid_fusion: Literal["adaptive", "rrf", "weighted"] = Field(
        "adaptive",
        description="Default fusion of hybrid search: adaptive (a per-query dense weight from "
        "the two rankings' score profiles) had the best worst case over the eval sets of "
        "docs/benchmarks.md (-0.009 recall@5 against the better single mode; weighted 0.9: "
        "-0.066).",
    )
    hybrid_dense_weight: float = Field(
        0.9, ge=0, le=1, description="Default dense weight of weighted fusion (BM25: 1 - it)."
    )
    reranker: Literal["none", "embedding", "http"] = Field(
        "none",
        description="What reranks searches that ask for it: none (such a search is "
        "FAILED_PRECONDITION), embedding (the embedding service's cross-encoder, "
        "AIMESH_RERANK_MODEL there) or http (a rerank API at AIMESH_RERANK_URL).",
    )
    rerank_candidates: int = Field(
        50,
        ge=1,
        le=200,
        description="How many of the best fused candidates a reranked search scores (at least "
        "its top_k); more finds more, each costs one cross-encoder pair.",
    )
    rerank_url: str = Field(
        "",
        description="Base URL of the rerank HTTP API (reranker=http), e.g. http://tei:8080.",
    )
    rerank_protocol: Literal["tei", "cohere"] = Field(
        "tei",
        description="Dialect of the rerank HTTP API: tei (POST /rerank, query + texts) or "
        "cohere (POST /v1/rerank, model + query + documents; also Jina and vLLM).",
    )
    rerank_model: str = Field(
        "", description="Model name sent to a cohere-dialect rerank API (empty: not sent)."
    )
    rerank_api_key: SecretStr | None = Field(
        None, description="Bearer token of the rerank HTTP API (env only; never logged)."
    )
    rerank_api_key_file: Path | None = Field(
        None, description="File holding the rerank API key (a mounted Kubernetes secret)."
    )
    rerank_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="Deadline of one rerank call."
    )
    rerank_http_batch_size: int = Field(
        32,
        ge=1,
        le=1024,
        description="Most texts per call to the rerank HTTP API (TEI refuses more than its "
        "--max-client-batch-size, 32 by default); more candidates go in several calls.",
    )
    jobs_database_url: str = Field(
        "",
        description=(
            "SQLAlchemy async URL of the ingestion job store, e.g. "
            "postgresql+asyncpg://user@host/db. Empty: SQLite file <data_dir>/jobs.db."
        ),
    )
    migrate_on_start: bool = Field(
        True,
        description="Apply the job store's migrations when the service starts (else run "
        "make migrate, or python -m aimesh_retrieval.migrations, before it).",
    )
    job_lease_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="How long a claimed job stays with its runner without progress before "
        "another runner (or the restarted service) takes it over.",
    )
    job_batch_chunks: int = Field(
        BATCH_CHUNKS,
        ge=1,
        le=8192,
        description="Chunks an ingestion job embeds and writes per step (a bigger document is "
        "a step of its own); bounds the job's memory.",
    )
    max_documents_per_request: int = Field(100, ge=1, le=10_000)
    max_document_chars: int = Field(1_000_000, ge=1)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Self:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self

    @field_validator("rerank_api_key", mode="before")
    @classmethod
    def _blank_key_is_no_key(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _reranker_is_complete(self) -> Self:
        if self.rerank_api_key is None and self.rerank_api_key_file is not None:
            try:
                key = self.rerank_api_key_file.read_text(encoding="utf-8").strip()
            except OSError as error:
                raise ValueError(
                    f"AIMESH_RERANK_API_KEY_FILE cannot be read: {error.strerror}"
                ) from None
            if not key:
                raise ValueError("AIMESH_RERANK_API_KEY_FILE is empty")
            object.__setattr__(self, "rerank_api_key", SecretStr(key))
        if self.reranker == "http" and not self.rerank_url.startswith(("http://", "https://")):
            raise ValueError("AIMESH_RERANKER=http needs AIMESH_RERANK_URL, an http(s):// base URL")
        return self

    @property
    def resolved_jobs_database_url(self) -> str:
        return self.jobs_database_url or f"sqlite+aiosqlite:///{self.data_dir / 'jobs.db'}"

    @property
    def milvus_is_server(self) -> bool:
        """True when ``milvus_uri`` names a Milvus server rather than a Lite file."""
        return self.milvus_uri.startswith(("http://", "https://", "tcp://", "grpc://"))

    @property
    def resolved_milvus_uri(self) -> str:
        """The URI handed to ``MilvusClient``: the server, or the Lite file path."""
        if not self.milvus_uri:
            return str(self.data_dir / "milvus.db")
        return self.milvus_uri
