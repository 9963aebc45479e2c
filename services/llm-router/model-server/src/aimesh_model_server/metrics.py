"""Prometheus metrics of the model server (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "aimesh_model_requests_total",
    "Chat completion requests by outcome (ok, overloaded, invalid, cancelled, failed).",
    ["outcome"],
)
TOKENS = Counter("aimesh_model_tokens_total", "Tokens by kind (prompt, completion).", ["kind"])
FIRST_TOKEN = Histogram(
    "aimesh_model_first_token_seconds",
    "From a request's arrival to its first generated token.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
RUNNING = Gauge("aimesh_model_running_requests", "Requests generating now.")
WAITING = Gauge("aimesh_model_waiting_requests", "Requests waiting for a batch slot.")
