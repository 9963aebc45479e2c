"""Builds the embedding gRPC server (health, reflection and error mapping included)."""

from __future__ import annotations

import grpc
from opentelemetry.sdk.trace import TracerProvider

from aimesh.embedding.v1 import embedding_pb2
from aimesh_common.server import GrpcServer, build_grpc_server
from aimesh_embedding.config import Settings
from aimesh_embedding.model import Encoder
from aimesh_embedding.rerank import CrossEncoderScorer
from aimesh_embedding.servicer import (
    EmbeddingServicer,
    decode_embed_request,
    decode_rerank_request,
)

SERVICE_NAME: str = embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name


def create_server(
    settings: Settings,
    encoder: Encoder,
    tracer_provider: TracerProvider | None = None,
    reranker: CrossEncoderScorer | None = None,
) -> GrpcServer:
    """A server for ``encoder`` on ``settings.host:settings.port`` (port 0 picks a free one).

    With ``reranker`` the Rerank RPC scores with it; without, Rerank is FAILED_PRECONDITION.

    With ``tracer_provider`` every RPC gets a server span (the caller owns the provider).
    """
    servicer = EmbeddingServicer(encoder, settings, reranker)

    # The generated registration, except that Embed and Rerank decode their requests
    # themselves, so bytes that are not a valid message (bad UTF-8) get INVALID_ARGUMENT
    # instead of UNKNOWN.
    handlers = grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Embed": grpc.unary_unary_rpc_method_handler(
                servicer.Embed,
                request_deserializer=decode_embed_request,
                response_serializer=embedding_pb2.EmbedResponse.SerializeToString,
            ),
            "Rerank": grpc.unary_unary_rpc_method_handler(
                servicer.Rerank,
                request_deserializer=decode_rerank_request,
                response_serializer=embedding_pb2.RerankResponse.SerializeToString,
            ),
            "Info": grpc.unary_unary_rpc_method_handler(
                servicer.Info,
                request_deserializer=embedding_pb2.InfoRequest.FromString,
                response_serializer=embedding_pb2.InfoResponse.SerializeToString,
            ),
        },
    )

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((handlers,))

    grpc_server = build_grpc_server(
        host=settings.host,
        port=settings.port,
        register=register,
        service_names=[SERVICE_NAME],
        max_message_bytes=settings.max_message_bytes,
        tracer_provider=tracer_provider,
    )
    grpc_server.on_stop.append(servicer.close)
    return grpc_server
