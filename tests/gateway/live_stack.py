"""The gateway served by uvicorn in front of the real LLM router (SQLite store), whose
model is an OpenAI-protocol test server, and a fixed retrieval service: for tests that need
real TCP and real gRPC between the gateway and the router (streams, disconnects)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from fastapi import FastAPI

from aimesh.retrieval.v1 import retrieval_pb2_grpc
from aimesh_common.server import GrpcServer, build_grpc_server
from aimesh_gateway.main import create_app
from aimesh_llm_router.config import Settings as RouterSettings
from aimesh_llm_router.modelconfig import validate_models_config
from aimesh_llm_router.providers import PROVIDERS
from aimesh_llm_router.server import build_dependencies, create_server
from tests.gateway.conftest import FakeMesh, serve_on_free_port
from tests.gateway.helpers import settings_for
from tests.llm_router.conftest import (
    FixedRetrieval,
    RunningRouter,
    models_config,
    openai_model,
    openai_settings,
    start_router,
    stop_router,
)
from tests.llm_router.openai_server import FakeOpenAI


@dataclass
class Stack:
    upstream: FakeOpenAI
    retrieval: FixedRetrieval
    router: RunningRouter
    app: FastAPI
    live_url: str


@asynccontextmanager
async def real_router_stack(
    fake_mesh: FakeMesh,
    data_dir: Path,
    more_models: dict[str, Any] | None = None,
    **model: Any,
) -> AsyncIterator[Stack]:
    """``app`` runs its lifespan here and is also served at ``live_url``; ``model`` adds
    fields to the default alias's model config (prices, ...), ``more_models`` more aliases."""
    upstream = FakeOpenAI()
    await upstream.start()
    retrieval = FixedRetrieval()
    retrieval_server: GrpcServer = build_grpc_server(
        host="127.0.0.1",
        port=0,
        register=lambda s: retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(retrieval, s),
        service_names=["aimesh.retrieval.v1.RetrievalService"],
    )
    await retrieval_server.start()
    router = await start_router(
        openai_settings(
            upstream.base_url,
            retrieval_service_addr=f"127.0.0.1:{retrieval_server.port}",
            data_dir=data_dir,
        ),
        models_config({"default": openai_model(upstream.base_url, **model), **(more_models or {})}),
    )
    settings = settings_for(
        router_addr=f"127.0.0.1:{router.server.port}",
        retrieval_addr=f"127.0.0.1:{retrieval_server.port}",
        embedding_addr=fake_mesh.embedding_addr,
    )
    app = create_app(settings)
    try:
        async with (
            serve_on_free_port(app, lifespan=False) as url,
            app.router.lifespan_context(app),
        ):
            yield Stack(upstream, retrieval, router, app, url)
    finally:
        await stop_router(router)
        await retrieval_server.stop(0)
        await upstream.stop()


@asynccontextmanager
async def gateway_on_router(
    fake_mesh: FakeMesh, models: dict[str, Any], **router_settings_overrides: Any
) -> AsyncIterator[str]:
    """A real router configured with ``models`` (the models file's content, validated as the
    service validates it) and ``router_settings_overrides`` (e.g. its ``data_dir``) on the
    fake mesh's retrieval and embedding, behind the gateway served by uvicorn; yields the
    gateway's base URL."""
    config = validate_models_config(models, "test", frozenset(PROVIDERS), environ={})
    router_settings = RouterSettings(
        port=0, host="127.0.0.1", metrics_port=None, **router_settings_overrides
    )
    retrieval_channel = grpc.aio.insecure_channel(fake_mesh.retrieval_addr)
    embedding_channel = grpc.aio.insecure_channel(fake_mesh.embedding_addr)
    deps = build_dependencies(
        router_settings,
        config=config,
        retrieval_channel=retrieval_channel,
        embedding_channel=embedding_channel,
    )
    router: GrpcServer = create_server(router_settings, deps)
    await router.start()
    gateway = create_app(
        settings_for(
            router_addr=f"127.0.0.1:{router.port}",
            retrieval_addr=fake_mesh.retrieval_addr,
            embedding_addr=fake_mesh.embedding_addr,
        )
    )
    try:
        async with serve_on_free_port(gateway) as url:
            yield url
    finally:
        await router.stop(0)
        await deps.aclose()
        for channel in (retrieval_channel, embedding_channel):
            await channel.close()
