"""Prometheus metrics of the embedding service (served by aimesh_common.metrics)."""

from __future__ import annotations

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
