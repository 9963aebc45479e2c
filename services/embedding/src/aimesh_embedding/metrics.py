"""Prometheus metrics of the embedding service (served by aimesh_common.metrics)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter("aimesh_embedding_requests", "Embed calls received.")
INPUTS = Counter("aimesh_embedding_inputs", "Inputs embedded.")
TOKENS = Counter("aimesh_embedding_tokens", "Model tokens embedded (after truncation).")
REJECTIONS = Counter(
    "aimesh_embedding_rejections",
    "Embed calls refused: reason=queue_full (RESOURCE_EXHAUSTED) or invalid (INVALID_ARGUMENT).",
    ["reason"],
)
IN_PROGRESS = Gauge(
    "aimesh_embedding_requests_in_progress",
    "Validated Embed calls waiting for or running on the model.",
)
QUEUE_INPUTS = Gauge(
    "aimesh_embedding_queue_inputs",
    "Inputs accepted and not yet answered (waiting for or inside a model batch).",
)
MALLOC_TRIM_SECONDS = Histogram(
    "aimesh_embedding_malloc_trim_seconds",
    "malloc_trim calls made while the model was idle (AIMESH_EMBEDDING_MALLOC_TRIM_SECONDS), "
    "and how long each held the model thread.",
    buckets=_SECONDS,
)
QUEUE_SECONDS = Histogram(
    "aimesh_embedding_queue_seconds",
    "Time from accepting a call to the start of its first model batch.",
    buckets=_SECONDS,
)
INFERENCE_SECONDS = Histogram(
    "aimesh_embedding_inference_seconds",
    "Time the model spent on one batch.",
    buckets=_SECONDS,
)
BATCH_INPUTS = Histogram(
    "aimesh_embedding_batch_inputs",
    "Inputs per model batch.",
    buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256),
)
BATCH_PADDING = Histogram(
    "aimesh_embedding_batch_fill_ratio",
    "Real tokens / padded tokens of each model batch (1.0 = no padding).",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
)

RERANK_REQUESTS = Counter("aimesh_embedding_rerank_requests", "Rerank calls received.")
RERANK_PAIRS = Counter("aimesh_embedding_rerank_pairs", "Query/text pairs scored by Rerank.")
RERANK_REJECTIONS = Counter(
    "aimesh_embedding_rerank_rejections",
    "Rerank calls refused: reason=queue_full, invalid or no_model (FAILED_PRECONDITION).",
    ["reason"],
)
RERANK_SECONDS = Histogram(
    "aimesh_embedding_rerank_seconds",
    "Time of a Rerank call from receipt to answer (tokenizing, queueing, scoring).",
    buckets=_SECONDS,
)
RERANK_QUEUE_INPUTS = Gauge(
    "aimesh_embedding_rerank_queue_inputs",
    "Pairs accepted by Rerank and not yet scored.",
)
RERANK_QUEUE_SECONDS = Histogram(
    "aimesh_embedding_rerank_queue_seconds",
    "Time from accepting a Rerank call to the start of its first cross-encoder batch.",
    buckets=_SECONDS,
)
RERANK_INFERENCE_SECONDS = Histogram(
    "aimesh_embedding_rerank_inference_seconds",
    "Time the cross-encoder spent on one batch.",
    buckets=_SECONDS,
)
RERANK_BATCH_INPUTS = Histogram(
    "aimesh_embedding_rerank_batch_inputs",
    "Pairs per cross-encoder batch.",
    buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256),
)
RERANK_BATCH_PADDING = Histogram(
    "aimesh_embedding_rerank_batch_fill_ratio",
    "Real tokens / padded tokens of each cross-encoder batch (1.0 = no padding).",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
)


@dataclass(frozen=True)
class BatchMetrics:
    """The metrics one :class:`~aimesh_embedding.batcher.Batcher` reports to."""

    rejections: Counter
    queue_inputs: Gauge
    queue_seconds: Histogram
    inference_seconds: Histogram
    batch_inputs: Histogram
    batch_fill: Histogram


EMBED_BATCHES = BatchMetrics(
    REJECTIONS, QUEUE_INPUTS, QUEUE_SECONDS, INFERENCE_SECONDS, BATCH_INPUTS, BATCH_PADDING
)
RERANK_BATCHES = BatchMetrics(
    RERANK_REJECTIONS,
    RERANK_QUEUE_INPUTS,
    RERANK_QUEUE_SECONDS,
    RERANK_INFERENCE_SECONDS,
    RERANK_BATCH_INPUTS,
    RERANK_BATCH_PADDING,
)
