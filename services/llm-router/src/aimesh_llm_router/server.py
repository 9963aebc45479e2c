"""Builds the LLM router's gRPC server from settings and injected dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from aimesh.embedding.v1 import embedding_pb2_grpc
from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc
from aimesh.retrieval.v1 import retrieval_pb2_grpc
from aimesh_common.channels import create_channel
from aimesh_common.server import GrpcServer, build_grpc_server
from aimesh_llm_router.config import Settings
from aimesh_llm_router.models import ModelRegistry, build_registry
from aimesh_llm_router.providers import ProviderContext
from aimesh_llm_router.servicer import LLMRouterServicer
from aimesh_llm_router.templates import PromptLibrary, load_prompt_library

SERVICE_NAME = llm_pb2.DESCRIPTOR.services_by_name["LLMRouterService"].full_name


@dataclass
class Dependencies:
    """What the router calls: its models (providers behind aliases), retrieval, templates.

    ``closers`` run when the server stops (channels, provider clients).
    """

    models: ModelRegistry
    retrieval: retrieval_pb2_grpc.RetrievalServiceAsyncStub
    prompts: PromptLibrary
    embedding: embedding_pb2_grpc.EmbeddingServiceAsyncStub | None = None
    closers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in self.closers:
            await close()


def build_dependencies(
    settings: Settings,
    *,
    retrieval_channel: grpc.aio.Channel | None = None,
    embedding_channel: grpc.aio.Channel | None = None,
    prompts: PromptLibrary | None = None,
) -> Dependencies:
    """Channels to the backends, templates and the provider registry for ``settings``.

    Channels not passed in are created from the configured addresses and closed with
    the dependencies. Raises PromptTemplateError or ValueError when misconfigured.
    """
    library = prompts or load_prompt_library()
    closers: list[Callable[[], Awaitable[object]]] = []
    if retrieval_channel is None:
        retrieval_channel = create_channel(
            settings.retrieval_service_addr, max_message_bytes=settings.max_message_bytes
        )
        closers.append(retrieval_channel.close)
    embedding: embedding_pb2_grpc.EmbeddingServiceAsyncStub | None = None
    if settings.provider == "local":
        if embedding_channel is None:
            embedding_channel = create_channel(
                settings.embedding_service_addr, max_message_bytes=settings.max_message_bytes
            )
            closers.append(embedding_channel.close)
        embedding = embedding_pb2_grpc.EmbeddingServiceStub(embedding_channel)
    models = build_registry(
        ProviderContext(settings=settings, prompts=library, embedding=embedding)
    )
    closers.insert(0, models.aclose)
    return Dependencies(
        models=models,
        retrieval=retrieval_pb2_grpc.RetrievalServiceStub(retrieval_channel),
        prompts=library,
        embedding=embedding,
        closers=closers,
    )


def create_server(settings: Settings, deps: Dependencies) -> GrpcServer:
    """The router's server (not started), closing ``deps`` when it stops."""
    servicer = LLMRouterServicer(
        models=deps.models,
        retrieval=deps.retrieval,
        prompts=deps.prompts,
        backend_timeout_seconds=settings.backend_timeout_seconds,
    )

    def register(server: grpc.aio.Server) -> None:
        llm_pb2_grpc.add_LLMRouterServiceServicer_to_server(servicer, server)

    server = build_grpc_server(
        host=settings.host,
        port=settings.port,
        register=register,
        service_names=[SERVICE_NAME],
        max_message_bytes=settings.max_message_bytes,
    )
    server.on_stop.append(deps.aclose)
    return server
