"""Gateway fixtures: in-memory backends over real gRPC, and the app in front of them."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from aimesh_common.server import GrpcServer
from aimesh_gateway.core.config import Settings, default_database_url
from aimesh_gateway.db.engine import create_engine, migrate
from aimesh_gateway.main import create_app
from tests.conftest import free_port
from tests.gateway.fakes import (
    FailingRouter,
    FakeRetrieval,
    FakeRouter,
    serve_health_only,
    serve_retrieval,
    serve_router,
)
from tests.gateway.helpers import settings_for


@dataclass
class FakeMesh:
    retrieval: FakeRetrieval
    router: FakeRouter
    failing: FailingRouter
    retrieval_server: GrpcServer
    router_server: GrpcServer
    failing_server: GrpcServer
    embedding_server: GrpcServer

    def settings(self, **overrides: Any) -> Settings:
        """Gateway settings pointing at these backends (tests/gateway/helpers.py defaults)."""
        return settings_for(
            router_addr=self.router_addr,
            retrieval_addr=self.retrieval_addr,
            embedding_addr=self.embedding_addr,
            **overrides,
        )

    @property
    def retrieval_addr(self) -> str:
        return f"127.0.0.1:{self.retrieval_server.port}"

    @property
    def router_addr(self) -> str:
        return f"127.0.0.1:{self.router_server.port}"

    @property
    def failing_addr(self) -> str:
        return f"127.0.0.1:{self.failing_server.port}"

    @property
    def embedding_addr(self) -> str:
        return f"127.0.0.1:{self.embedding_server.port}"


@pytest.fixture(scope="session")
async def fake_mesh() -> AsyncIterator[FakeMesh]:
    retrieval = FakeRetrieval()
    retrieval_server = serve_retrieval(retrieval)
    await retrieval_server.start()
    router = FakeRouter(f"127.0.0.1:{retrieval_server.port}")
    router_server = serve_router(router)
    failing = FailingRouter()
    failing_server = serve_router(failing)
    embedding_server = serve_health_only("aimesh.embedding.v1.EmbeddingService")
    for server in (router_server, failing_server, embedding_server):
        await server.start()
    yield FakeMesh(
        retrieval,
        router,
        failing,
        retrieval_server,
        router_server,
        failing_server,
        embedding_server,
    )
    for server in (router_server, failing_server, embedding_server, retrieval_server):
        await server.stop(0)
    await router.channel.close()


@pytest.fixture(scope="session")
async def app(fake_mesh: FakeMesh) -> AsyncIterator[FastAPI]:
    """The gateway in front of the in-memory backends (lifespan running)."""
    gateway = create_app(fake_mesh.settings())
    async with gateway.router.lifespan_context(gateway):
        yield gateway


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


@pytest.fixture(scope="session")
async def failing_app(fake_mesh: FakeMesh) -> AsyncIterator[FastAPI]:
    """The gateway whose router fails every call with ``fake_mesh.failing.error``."""
    gateway = create_app(
        settings_for(
            router_addr=fake_mesh.failing_addr,
            retrieval_addr=fake_mesh.retrieval_addr,
            embedding_addr=fake_mesh.embedding_addr,
        )
    )
    async with gateway.router.lifespan_context(gateway):
        yield gateway


@pytest.fixture
async def failing_client(failing_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=failing_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A fresh database on the real PostgreSQL at 127.0.0.1:5432, dropped after the session."""
    name = f"aimesh_gw_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Each database backend the gateway supports: SQLite (default) and PostgreSQL."""
    if request.param == "sqlite":
        return default_database_url(tmp_path_factory.mktemp("gateway-db"))
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="session")
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated engine on each backend."""
    engine = create_engine(database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


@contextlib.asynccontextmanager
async def serve_on_free_port(app: FastAPI, *, lifespan: bool = True) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free local port (for clients that need real TCP, such
    as the OpenAI SDK); yields its base URL. ``lifespan=False`` when the caller already
    runs the app's lifespan."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    if not lifespan:
        server.config.lifespan = "off"
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture(scope="session")
async def live_gateway(fake_mesh: FakeMesh) -> AsyncIterator[str]:
    """The gateway on the fake mesh, served by uvicorn on a free port."""
    gateway = create_app(fake_mesh.settings())
    async with serve_on_free_port(gateway) as url:
        yield url


@pytest.fixture(scope="session")
async def db_app(fake_mesh: FakeMesh, database_url: str) -> AsyncIterator[FastAPI]:
    """The gateway on each database backend (SQLite, then the real PostgreSQL): modules
    whose routes keep state (keys, users, usage, feedback) use it as their ``app``."""
    gateway = create_app(fake_mesh.settings(database_url=database_url))
    async with gateway.router.lifespan_context(gateway):
        yield gateway


def on_each_database() -> tuple[Any, Any]:
    """``app, client = on_each_database()`` in a test module whose routes keep state runs
    its tests on SQLite and on the real PostgreSQL (``db_app``)."""

    @pytest.fixture
    def app(db_app: FastAPI) -> FastAPI:
        return db_app

    @pytest.fixture
    async def client(db_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=db_app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http

    return app, client
