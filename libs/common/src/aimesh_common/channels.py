"""Client channels to other aimesh services.

Addresses without a scheme are resolved with ``dns:///`` and balanced ``round_robin``,
so a headless Kubernetes Service (one A record per pod) spreads calls over all replicas.
"""

from __future__ import annotations

import json

import grpc

_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                # Retry transient failures (a replica restarting) for every method.
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


def target_for(addr: str) -> str:
    """``host:port`` becomes ``dns:///host:port``; explicit schemes are kept."""
    return (
        addr
        if "://" in addr or addr.startswith(("unix:", "dns:", "ipv4:", "ipv6:"))
        else f"dns:///{addr}"
    )


def create_channel(addr: str, *, max_message_bytes: int = 16 * 1024 * 1024) -> grpc.aio.Channel:
    """An insecure aio channel (TLS is the mesh's job in Kubernetes)."""
    return grpc.aio.insecure_channel(
        target_for(addr),
        options=[
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
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
