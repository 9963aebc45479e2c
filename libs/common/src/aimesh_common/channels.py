"""Client channels to other aimesh services.

Addresses without a scheme are resolved with ``dns:///`` and balanced ``round_robin``,
so a headless Kubernetes Service (one A record per pod) spreads calls over all replicas.
Every call made while a request is handled carries its id as ``x-request-id`` metadata
(:mod:`aimesh_common.request_id`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc
from opentelemetry.sdk.trace import TracerProvider

from aimesh_common.request_id import request_id_client_interceptors
from aimesh_common.tracing import client_tracing_interceptors

# Calls retried once on another replica when they die with UNAVAILABLE, e.g. because the
# replica that had the call was SIGKILLed mid-call:
# - every call to the embedding service (the leaf: every method idempotent, it calls no
#   other service);
# - the read-only calls to retrieval (Search, the listings, a job's state): repeating one
#   changes nothing. Its writes are not retried (a first attempt may have half-happened).
#   A read that failed because retrieval's own upstream (embedding, Milvus) is down costs a
#   second quick failure at most: throttling stops retries when most calls fail.
# No retry policy for the other services: one answering UNAVAILABLE may already have retried
# its own upstream, and retries at every hop multiply. gRPC still retries transparently calls
# that never reached a server (a replica going away), which is what round_robin needs.
_RETRY_ONCE = {
    "maxAttempts": 2,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
RETRIEVAL_READS = ("Search", "ListDocuments", "ListCollections", "GetIngestJob")
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": "aimesh.embedding.v1.EmbeddingService"}],
                "retryPolicy": _RETRY_ONCE,
            },
            {
                "name": [
                    {"service": "aimesh.retrieval.v1.RetrievalService", "method": method}
                    for method in RETRIEVAL_READS
                ],
                "retryPolicy": _RETRY_ONCE,
            },
        ],
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }
)
# gRPC's default reconnect backoff grows 1 s x 1.6 per failure up to 120 s: a peer that
# starts 30 s after its caller (the embedding model loading) is then noticed up to ~20 s
# late, and a restarted replica even later. Peers in the mesh are cheap to dial: retry at
# most every 2 s.
RECONNECT_BACKOFF_MS = {"initial": 250, "max": 2_000}


def target_for(addr: str) -> str:
    """``host:port`` becomes ``dns:///host:port``; explicit schemes are kept."""
    return (
        addr
        if "://" in addr or addr.startswith(("unix:", "dns:", "ipv4:", "ipv6:"))
        else f"dns:///{addr}"
    )


def create_channel(
    addr: str,
    *,
    max_message_bytes: int = 16 * 1024 * 1024,
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
    tracer_provider: TracerProvider | None = None,
    request_id_propagation: bool = True,
) -> grpc.aio.Channel:
    """An insecure aio channel (TLS is the mesh's job in Kubernetes).

    With ``tracer_provider`` (services that trace pass theirs) every call is a CLIENT span
    and sends the trace context (``traceparent``) along (:mod:`aimesh_common.tracing`).
    ``request_id_propagation`` sends the current request id (``x-request-id``) with every
    call that does not set one itself, so a request keeps its id from hop to hop.
    """
    chosen = list(interceptors or ())
    if tracer_provider is not None:
        chosen += client_tracing_interceptors(tracer_provider)
    if request_id_propagation:
        chosen += request_id_client_interceptors()
    return grpc.aio.insecure_channel(
        target_for(addr),
        interceptors=chosen or None,
        options=[
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS["initial"]),
            ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS["initial"]),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS["max"]),
        ],
    )


async def check_health(
    channel: grpc.aio.Channel, service: str = "", deadline_seconds: float = 2.0
) -> bool:
    """True when the peer answers grpc.health.v1 with SERVING."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=deadline_seconds
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
