"""Entry point of ``aimesh-embedding``: settings, logging, metrics, model, then serve."""

from __future__ import annotations

import asyncio
import logging
import time

from aimesh_common.logging import configure_logging
from aimesh_common.memory import apply_malloc_settings
from aimesh_common.metrics import start_metrics_server
from aimesh_common.settings import load_settings
from aimesh_common.tracing import tracer_provider_for
from aimesh_embedding.config import Settings
from aimesh_embedding.model import Encoder, ModelLoadError, load_backend
from aimesh_embedding.rerank import CrossEncoderScorer, load_reranker
from aimesh_embedding.server import create_server

log = logging.getLogger("aimesh.embedding")


async def _serve(settings: Settings, encoder: Encoder, reranker: CrossEncoderScorer | None) -> None:
    # Built inside the running loop: grpc.aio objects belong to the loop that creates them.
    tracer_provider = tracer_provider_for(settings.otlp_endpoint, "aimesh-embedding")
    server = create_server(settings, encoder, tracer_provider, reranker)
    if tracer_provider is not None:
        server.on_stop.append(tracer_provider.shutdown)
    await server.serve(settings.grace_seconds)


def main() -> None:
    """Run the service until SIGTERM/SIGINT. Exits 2 on invalid settings, 1 if it cannot start."""
    settings = load_settings(Settings)
    configure_logging("embedding", settings.log_level, settings.log_format)
    try:
        metrics_port = start_metrics_server(settings.metrics_port)
        # Before the model loads, so that its weights and first batches follow it too.
        threshold = settings.embedding_malloc_mmap_threshold_kib
        apply_malloc_settings(threshold, "AIMESH_EMBEDDING_MALLOC_MMAP_THRESHOLD_KIB")
        started = time.perf_counter()
        encoder = load_backend(settings)
        log.info(
            "model loaded",
            extra={
                "model": encoder.name,
                "model_dir": settings.embedding_model,
                "dimension": encoder.dimension,
                "max_input_tokens": encoder.max_input_tokens,
                "backend": encoder.backend,
                "load_seconds": round(time.perf_counter() - started, 2),
                "metrics_port": metrics_port,
            },
        )
        reranker = load_reranker(settings)
        if reranker is not None:
            log.info(
                "rerank model loaded",
                extra={
                    "rerank_model": reranker.name,
                    "rerank_model_dir": settings.rerank_model,
                    "max_input_tokens": reranker.max_input_tokens,
                },
            )
        asyncio.run(_serve(settings, encoder, reranker))
    except (ModelLoadError, OSError) as error:
        log.error("cannot start: %s", error)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
