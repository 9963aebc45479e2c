"""Entry point of the ``aimesh-retrieval`` console script."""

from __future__ import annotations

import os

# Arrow fixes its allocator when it is first imported (here: pymilvus -> pandas -> pyarrow,
# below), so AIMESH_ARROW_MEMORY_POOL has to reach the environment before that; main()
# checks the pool Arrow ended up with against the validated setting.
os.environ["ARROW_DEFAULT_MEMORY_POOL"] = os.environ.get("AIMESH_ARROW_MEMORY_POOL", "system")

import asyncio
import logging
from urllib.parse import urlsplit

from pymilvus.exceptions import MilvusException
from sqlalchemy.exc import SQLAlchemyError
from threadpoolctl import threadpool_info, threadpool_limits

from aimesh_common.embedding_client import EmbeddingClient
from aimesh_common.logging import configure_logging
from aimesh_common.memory import PeriodicTrim, apply_malloc_settings
from aimesh_common.metrics import start_metrics_server
from aimesh_common.settings import load_settings
from aimesh_common.tracing import tracer_provider_for
from aimesh_retrieval import metrics
from aimesh_retrieval.config import Settings
from aimesh_retrieval.jobs import JobStore
from aimesh_retrieval.rerank import build_reranker
from aimesh_retrieval.server import create_server
from aimesh_retrieval.store import MilvusStore

log = logging.getLogger("aimesh.retrieval")


def _milvus_location(settings: Settings) -> str:
    """Where Milvus is, for logs: host and port of a server (never credentials)."""
    if not settings.milvus_is_server:
        return settings.resolved_milvus_uri
    parts = urlsplit(settings.milvus_uri)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 19530}"


async def run(settings: Settings) -> None:
    """Connect to Milvus, serve until SIGTERM/SIGINT, then close the dependencies."""
    try:
        # Blocking, but before anything else runs: Milvus Lite starts its process here.
        store = MilvusStore.open(settings)
    except MilvusException as error:
        log.error(
            "cannot connect to Milvus",
            extra={"milvus": _milvus_location(settings), "error": error.message},
        )
        raise SystemExit(1) from None
    tracer_provider = tracer_provider_for(settings.otlp_endpoint, "aimesh-retrieval")
    embedder = EmbeddingClient.connect(
        settings.embedding_service_addr,
        batch_size=settings.embed_batch_size,
        concurrency=settings.embed_concurrency,
        timeout=settings.embed_timeout_seconds,
        tracer_provider=tracer_provider,
    )
    if not settings.jobs_database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        jobs = await JobStore.open(
            settings.resolved_jobs_database_url,
            batch_chunks=settings.job_batch_chunks,
            migrate=settings.migrate_on_start,
        )
    except (SQLAlchemyError, OSError) as error:
        # The URL may hold a password: name only the kind of failure.
        log.error("cannot open the ingestion job store", extra={"error": type(error).__name__})
        await embedder.close()
        await store.close()
        raise SystemExit(1) from None
    reranker = build_reranker(settings, embedder)
    server = create_server(settings, store, embedder, jobs, tracer_provider, reranker)
    trim = PeriodicTrim(settings.malloc_trim_seconds, metrics.MALLOC_TRIM_SECONDS.observe)
    trim.start()
    server.on_stop.extend([trim.stop, embedder.close, store.close, jobs.close])
    if reranker is not None:
        server.on_stop.append(reranker.close)
    if tracer_provider is not None:
        server.on_stop.append(tracer_provider.shutdown)
    log.info(
        "retrieval service configured",
        extra={
            "milvus": _milvus_location(settings),
            "embedding_service": settings.embedding_service_addr,
            "reranker": settings.reranker,
        },
    )
    await server.serve(settings.grace_seconds)


def limit_blas_threads(threads: int) -> None:
    """Fix the BLAS libraries' thread count (AIMESH_BLAS_THREADS; 0 leaves the default)."""
    import numpy  # noqa: F401  (loads OpenBLAS, so that threadpoolctl finds it)

    if threads <= 0:
        log.info("BLAS threads left at the library default (AIMESH_BLAS_THREADS=0)")
        return
    threadpool_limits(limits=threads, user_api="blas")
    found = [
        {"library": pool["internal_api"], "threads": pool["num_threads"]}
        for pool in threadpool_info()
        if pool["user_api"] == "blas"
    ]
    log.info("BLAS threads fixed", extra={"blas_threads": threads, "libraries": found})


def use_arrow_pool(backend: str) -> None:
    """Log Arrow's allocator; where it is not the configured one (the setting came from a
    file, or Arrow was loaded before this module), make it Arrow's default from now on."""
    import pyarrow

    found = pyarrow.default_memory_pool().backend_name
    if found != backend:
        try:
            pool = {
                "system": pyarrow.system_memory_pool,
                "mimalloc": pyarrow.mimalloc_memory_pool,
                "jemalloc": pyarrow.jemalloc_memory_pool,
            }[backend]()
        except NotImplementedError:  # this Arrow build lacks that allocator
            log.error(
                "Arrow has no such memory pool in this build",
                extra={"arrow_memory_pool": backend, "available": found},
            )
            raise SystemExit(2) from None
        pyarrow.set_memory_pool(pool)
        log.warning(
            "Arrow memory pool set after Arrow loaded: allocations made before keep the old one",
            extra={"arrow_memory_pool": backend, "before": found},
        )
        return
    log.info("Arrow memory pool", extra={"arrow_memory_pool": found})


def main() -> None:
    settings = load_settings(Settings)
    configure_logging("retrieval", settings.log_level, settings.log_format)
    start_metrics_server(settings.metrics_port)
    use_arrow_pool(settings.arrow_memory_pool)
    # Before Milvus Lite starts, so that its arrays follow it from the first write.
    apply_malloc_settings(settings.malloc_mmap_threshold_kib, "AIMESH_MALLOC_MMAP_THRESHOLD_KIB")
    limit_blas_threads(settings.blas_threads)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
