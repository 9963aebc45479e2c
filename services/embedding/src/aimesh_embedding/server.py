"""Builds the embedding gRPC server (health, reflection and error mapping included)."""

from __future__ import annotations

import grpc

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_common.server import GrpcServer, build_grpc_server
from aimesh_embedding.config import Settings
from aimesh_embedding.model import Encoder
from aimesh_embedding.servicer import EmbeddingServicer

SERVICE_NAME: str = embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name


def create_server(settings: Settings, encoder: Encoder) -> GrpcServer:
    """A server for ``encoder`` on ``settings.host:settings.port`` (port 0 picks a free one)."""
    servicer = EmbeddingServicer(encoder, settings)

    def register(server: grpc.aio.Server) -> None:
        embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(servicer, server)

    grpc_server = build_grpc_server(
        host=settings.host,
        port=settings.port,
        register=register,
        service_names=[SERVICE_NAME],
        max_message_bytes=settings.max_message_bytes,
    )
    grpc_server.on_stop.append(servicer.close)
    return grpc_server
