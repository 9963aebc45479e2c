"""The gRPC server factory: ``main`` and the tests build the service through it."""

from __future__ import annotations

import grpc
from opentelemetry.sdk.trace import TracerProvider

from aimesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from aimesh_common.embedding_client import EmbeddingClient
from aimesh_common.server import GrpcServer, build_grpc_server
from aimesh_retrieval.chunking import Chunker
from aimesh_retrieval.config import Settings
from aimesh_retrieval.jobs import JobStore
from aimesh_retrieval.rerank import Reranker
from aimesh_retrieval.servicer import RetrievalServicer
from aimesh_retrieval.store import MilvusStore

SERVICE_NAME = retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name


def create_server(
    settings: Settings,
    store: MilvusStore,
    embedder: EmbeddingClient,
    jobs: JobStore | None = None,
    tracer_provider: TracerProvider | None = None,
    reranker: Reranker | None = None,
) -> GrpcServer:
    """A bound, not yet started, server for the retrieval service.

    The caller owns ``store``, ``embedder`` and ``jobs`` and closes them after the server
    stopped (``main`` does so through ``GrpcServer.on_stop``). With ``jobs``, the job
    runner starts at once (so this must run inside the event loop) and stops first. With
    ``tracer_provider`` every RPC gets a server span (the caller owns the provider).
    With ``reranker`` (the caller owns it too) searches can rerank their candidates.
    """
    servicer = RetrievalServicer(
        store,
        embedder,
        Chunker(settings.chunk_size, settings.chunk_overlap, context=settings.chunk_context),
        max_documents_per_request=settings.max_documents_per_request,
        max_document_chars=settings.max_document_chars,
        fusion=settings.hybrid_fusion,
        dense_weight=settings.hybrid_dense_weight,
        jobs=jobs,
        job_lease=settings.job_lease_seconds,
        reranker=reranker,
        rerank_candidates=settings.rerank_candidates,
    )

    def register(server: grpc.aio.Server) -> None:
        retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, server)

    server = build_grpc_server(
        host=settings.host,
        port=settings.port,
        register=register,
        service_names=[SERVICE_NAME],
        max_message_bytes=settings.max_message_bytes,
        tracer_provider=tracer_provider,
    )
    runner = servicer.runner
    if runner is not None:
        # Called from a running event loop (main's ``run`` and the tests): jobs left
        # unfinished by a previous process resume right away.
        runner.start()
        server.on_stop.insert(0, runner.stop)
    return server
