"""Prometheus metrics shared by the gRPC services, and their exposition endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

GRPC_HANDLED = Counter(
    "aimesh_grpc_server_handled_total",
    "gRPC calls completed by the server, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_LATENCY = Histogram(
    "aimesh_grpc_server_handling_seconds",
    "Time from receiving a gRPC call to sending its last response.",
    ["grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def start_metrics_server(port: int | None, addr: str = "0.0.0.0") -> int | None:  # noqa: S104
    """Serve ``/metrics`` on ``port`` (0 picks a free one); returns the bound port."""
    if port is None:
        return None
    server, _thread = start_http_server(port, addr=addr)
    return int(server.server_port)
