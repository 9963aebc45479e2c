"""Builds the LLM router's gRPC server from settings and injected dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from opentelemetry.sdk.trace import TracerProvider

from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc
from aimesh.retrieval.v1 import retrieval_pb2_grpc
from aimesh_common.channels import create_channel
from aimesh_common.embedding_client import EmbeddingClient
from aimesh_common.server import GrpcServer, build_grpc_server
from aimesh_llm_router.config import Settings
from aimesh_llm_router.conversations import (
    ConversationStore,
    RedisConversationStore,
    SqlConversationStore,
)
from aimesh_llm_router.modelconfig import ModelsConfig, default_models_config, load_models_config
from aimesh_llm_router.models import ModelRegistry, build_registry
from aimesh_llm_router.providers import PROVIDERS, ProviderContext
from aimesh_llm_router.resilience import Resilience
from aimesh_llm_router.servicer import LLMRouterServicer
from aimesh_llm_router.templates import PromptLibrary, load_prompt_library

SERVICE_NAME = llm_pb2.DESCRIPTOR.services_by_name["LLMRouterService"].full_name
# Embed batches in flight at once for one request (a long text to summarize).
EMBED_CONCURRENCY = 4


@dataclass
class Dependencies:
    """What the router calls: its models (providers behind aliases), retrieval, templates.

    ``closers`` run when the server stops (channels, provider clients).
    """

    models: ModelRegistry
    retrieval: retrieval_pb2_grpc.RetrievalServiceAsyncStub
    prompts: PromptLibrary
    conversations: ConversationStore
    embedding: EmbeddingClient | None = None
    closers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    # Traces RPCs and passes the trace on to the backends when set (AIMESH_OTLP_ENDPOINT).
    tracer_provider: TracerProvider | None = None

    async def aclose(self) -> None:
        for close in self.closers:
            await close()


def models_config(settings: Settings) -> ModelsConfig:
    """The model configuration file's content, or the settings' default without one.

    Raises ModelConfigError (a ValueError) listing every problem of the file.
    """
    if settings.models_file is None:
        return default_models_config(settings)
    return load_models_config(settings.models_file, frozenset(PROVIDERS))


def conversation_store(settings: Settings) -> ConversationStore:
    """Redis when AIMESH_REDIS_URL is set (shared by replicas), else SQL: PostgreSQL when
    AIMESH_CONVERSATIONS_DATABASE_URL names it (shared by replicas), else a SQLite file."""
    if settings.redis_url is not None:
        return RedisConversationStore(
            settings.redis_url.get_secret_value(), settings.redis_key_prefix
        )
    return SqlConversationStore(
        settings.resolved_conversations_database_url, migrate=settings.migrate_on_start
    )


def build_dependencies(
    settings: Settings,
    *,
    retrieval_channel: grpc.aio.Channel | None = None,
    embedding_channel: grpc.aio.Channel | None = None,
    prompts: PromptLibrary | None = None,
    config: ModelsConfig | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Dependencies:
    """Channels to the backends, templates and the provider registry for ``settings``.

    Channels not passed in are created from the configured addresses and closed with
    the dependencies. Raises PromptTemplateError or ValueError when misconfigured.
    """
    library = prompts or load_prompt_library(settings.prompts_dir)
    models_cfg = config or models_config(settings)
    closers: list[Callable[[], Awaitable[object]]] = []
    if retrieval_channel is None:
        retrieval_channel = create_channel(
            settings.retrieval_service_addr,
            max_message_bytes=settings.max_message_bytes,
            tracer_provider=tracer_provider,
        )
        closers.append(retrieval_channel.close)
    embedding: EmbeddingClient | None = None
    if any(spec.provider == "local" for spec in models_cfg.models.values()):
        if embedding_channel is None:
            embedding_channel = create_channel(
                settings.embedding_service_addr,
                max_message_bytes=settings.max_message_bytes,
                tracer_provider=tracer_provider,
            )
            closers.append(embedding_channel.close)
        # One client for every local alias: the model's Info is asked once.
        embedding = EmbeddingClient(
            embedding_channel,
            timeout=settings.backend_timeout_seconds,
            concurrency=EMBED_CONCURRENCY,
        )
    models = build_registry(
        models_cfg,
        ProviderContext(
            settings=settings,
            prompts=library,
            embedding=embedding,
            tracer_provider=tracer_provider,
        ),
    )
    closers.insert(0, models.aclose)
    conversations = conversation_store(settings)
    closers.append(conversations.aclose)
    return Dependencies(
        models=models,
        conversations=conversations,
        retrieval=retrieval_pb2_grpc.RetrievalServiceStub(retrieval_channel),
        prompts=library,
        embedding=embedding,
        closers=closers,
        tracer_provider=tracer_provider,
    )


def create_server(settings: Settings, deps: Dependencies) -> GrpcServer:
    """The router's server (not started), closing ``deps`` when it stops."""
    servicer = LLMRouterServicer(
        models=deps.models,
        resilience=Resilience(deps.models.config),
        retrieval=deps.retrieval,
        prompts=deps.prompts,
        backend_timeout_seconds=settings.backend_timeout_seconds,
        conversations=deps.conversations,
        max_conversation_messages=settings.max_conversation_messages,
        responses_retention_seconds=settings.responses_retention_seconds,
    )

    def register(server: grpc.aio.Server) -> None:
        llm_pb2_grpc.add_LLMRouterServiceServicer_to_server(servicer, server)

    server = build_grpc_server(
        host=settings.host,
        port=settings.port,
        register=register,
        service_names=[SERVICE_NAME],
        max_message_bytes=settings.max_message_bytes,
        tracer_provider=deps.tracer_provider,
    )
    # The conversation store's schema is migrated before the server takes calls.
    server.on_start.append(deps.conversations.start)
    server.on_stop.append(deps.aclose)
    return server
