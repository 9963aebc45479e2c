"""The gRPC server factory every service uses.

``build_grpc_server`` binds the port (0 picks a free one, as tests do), registers health
and reflection next to the service's own servicers, and installs the interceptors: the
request id of each call (:mod:`aimesh_common.request_id`), tracing when enabled, errors.
``serve`` runs it until SIGTERM/SIGINT, then marks every service NOT_SERVING and stops
with a grace period so in-flight calls finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider

from aimesh_common.interceptors import ErrorInterceptor
from aimesh_common.request_id import RequestIdServerInterceptor
from aimesh_common.tracing import server_tracing_interceptor

log = logging.getLogger("aimesh.server")


@dataclass
class GrpcServer:
    """A built, not yet started, gRPC server and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: Sequence[str]
    # Run in order before the server listens (e.g. migrate a database); a failure leaves
    # the server unstarted.
    on_start: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    on_stop: list[Callable[[], object]] = field(default_factory=list)

    async def start(self) -> None:
        for prepare in self.on_start:
            await prepare()
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"port": self.port, "services": list(self.service_names)})

    async def stop(self, grace: float) -> None:
        """Mark NOT_SERVING (so balancers drain), then let in-flight calls finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for callback in self.on_stop:
            result = callback()
            if asyncio.iscoroutine(result):
                await result

    async def serve(self, grace: float) -> None:
        """Start, wait for SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("stopping", extra={"grace_seconds": grace})
        await self.stop(grace)
        log.info("stopped")


def build_grpc_server(
    *,
    host: str,
    port: int,
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    max_message_bytes: int = 16 * 1024 * 1024,
    tracer_provider: TracerProvider | None = None,
) -> GrpcServer:
    """Create a server with the service's servicers, health, reflection and interceptors.

    Every RPC's ``x-request-id`` is held for its duration, so its log lines and its own
    backend calls carry it. With ``tracer_provider`` every RPC gets a server span
    (continuing the caller's trace); the caller owns the provider and shuts it down.
    """
    # Outermost first: the request id covers everything the others log.
    interceptors: list[grpc.aio.ServerInterceptor] = [RequestIdServerInterceptor()]
    if tracer_provider is not None:
        interceptors.append(server_tracing_interceptor(tracer_provider))
    interceptors.append(ErrorInterceptor())
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
            # Clients re-resolve DNS only when a connection ends: recycling connections
            # every few minutes lets callers find replicas added by a scale-up.
            ("grpc.max_connection_age_ms", 300_000),
            ("grpc.max_connection_age_grace_ms", 60_000),
        ],
    )
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    return GrpcServer(
        server=server, port=bound, health=health_servicer, service_names=service_names
    )
