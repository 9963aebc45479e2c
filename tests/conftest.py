"""Fixtures shared by every test folder."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection

from scripts.devmesh import Mesh, Ports

if TYPE_CHECKING:
    from aimesh_common.db import Migrations
    from aimesh_embedding.model import TorchEncoder


# The real PostgreSQL of the machine (trust authentication); tests make their own databases.
POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.asynccontextmanager
async def new_postgres_database(prefix: str = "aimesh_test") -> AsyncIterator[str]:
    """A new empty database on the real PostgreSQL (its asyncpg URL), dropped afterwards;
    the test skips when PostgreSQL is not reachable."""
    import asyncpg  # type: ignore[import-untyped]

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    except (OSError, asyncpg.PostgresError) as error:  # pragma: no cover - machine dependent
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {error}")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--faults",
        action="store_true",
        help="also run the tests marked `faults` (the fault suite's long checks)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``faults`` run only with ``--faults`` (``make test-faults``); the
    default run keeps the quick checks of tests/faults, which carry no such mark."""
    if config.getoption("--faults"):
        return
    kept = [item for item in items if item.get_closest_marker("faults") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture(params=["sqlite", "postgres"])
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database on each backend the services support: a new SQLite file, or a new
    database on the real PostgreSQL (dropped after the test)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    async with new_postgres_database() as url:
        yield url


def schema_differences(connection: Connection, version_table: str, metadata: MetaData) -> list[Any]:
    """What ``alembic revision --autogenerate`` would write: the differences between the
    database's schema and ``metadata`` (empty when the migrations build the models)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": version_table})
    return list(compare_metadata(context, metadata))


async def migrate_empty_database(url: str, migrations: Migrations, metadata: MetaData) -> set[str]:
    """Migrate the empty database at ``url`` twice (the second run a no-op), check that it
    is at the newest revision and that its schema equals ``metadata``; its tables."""
    from aimesh_common import db

    engine = db.create_engine(url)
    try:
        assert await db.current_revision(engine, migrations) is None
        await db.migrate(engine, migrations)
        await db.migrate(engine, migrations)
    finally:
        await engine.dispose()
    return await migrated_as_models(url, migrations, metadata)


async def migrated_as_models(url: str, migrations: Migrations, metadata: MetaData) -> set[str]:
    """Check that the database at ``url`` is at the newest revision and that its schema
    equals ``metadata``; its tables."""
    from alembic.script import ScriptDirectory

    from aimesh_common import db

    head = ScriptDirectory(str(migrations.script_location)).get_current_head()
    engine = db.create_engine(url)
    try:
        assert await db.current_revision(engine, migrations) == head
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                schema_differences, migrations.version_table, metadata
            )
            assert differences == []
            return await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of one test on a free port (never the shared one); ``kill`` and
    ``start`` make an outage and its end on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def private_redis_server() -> Iterator[PrivateRedis]:
    """A started :class:`PrivateRedis`, stopped after."""
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def embedding_encoder() -> TorchEncoder:
    """The real embedding model, loaded once per session (tests/embedding reuse it)."""
    from aimesh_embedding.config import Settings
    from aimesh_embedding.model import load_encoder

    return load_encoder(Settings(port=0, host="127.0.0.1", metrics_port=None))


@pytest.fixture(scope="session")
async def embedding_addr(embedding_encoder: TorchEncoder) -> AsyncIterator[str]:
    """A real embedding gRPC server (real model) in this process, on a free port."""
    from aimesh_embedding.config import Settings
    from aimesh_embedding.server import create_server

    settings = Settings(port=0, host="127.0.0.1", metrics_port=None)
    server = create_server(settings, embedding_encoder)
    await server.start()
    yield f"127.0.0.1:{server.port}"
    await server.stop(0)


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """The four real services as separate processes on free ports, embedded defaults.

    Logs are in the ``logs`` folder next to the data; the OpenAI key of the environment
    is removed so the router serves the keyless ``local`` provider.
    """
    root = tmp_path_factory.mktemp("mesh")
    running = Mesh(
        root / "data",
        ports=Ports.free(),
        log_dir=root / "logs",
        log_format="json",
        extra_env={"OPENAI_API_KEY": None, "AIMESH_OPENAI_API_KEY": None},
    )
    with running:
        yield running


# The model server's first start converts the packaged model (the default engine,
# openvino-genai, reads the GGUF file and saves it as OpenVINO IR); the code it runs for
# that, resolve(), runs here once for the session.
_CONVERT = """
import sys
from pathlib import Path
from aimesh_model_server.config import Settings
from aimesh_model_server.main import chosen_engine
from aimesh_model_server.prepare import resolve
settings = Settings()
print(resolve(None, Path(sys.argv[1]), engine=chosen_engine(settings),
              precision=settings.precision, device="cpu"))
"""


@pytest.fixture(scope="session")
def converted_packaged_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``models`` folder of a model server's data dir after its first start: the packaged
    SmolLM2-135M-Instruct converted once per session (in a process of its own, as the
    server converts it) and shared by every test that serves it (``with_converted_model``).
    Skips when the packaged model is not installed."""
    from aimesh_model_server.prepare import ModelSourceError, packaged_model

    try:
        packaged_model()
    except ModelSourceError as error:
        pytest.skip(str(error))
    data = tmp_path_factory.mktemp("packaged-model")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMESH_")}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", _CONVERT, str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    engine_dir = Path(result.stdout.strip().splitlines()[-1])
    assert engine_dir.parent == data / "models"
    assert engine_dir.name.endswith("-openvino"), engine_dir  # the default engine's
    return data / "models"


def with_converted_model(data_dir: Path, models: Path) -> Path:
    """Give ``data_dir`` the session's converted model (``converted_packaged_model``), so a
    model server started on it loads instead of converting; ``data_dir``. A link, not a copy:
    the converted folders are named by a digest of their source's resolved path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "models").symlink_to(models, target_is_directory=True)
    return data_dir


def make_jwt(
    secret: str,
    *,
    tenant: str | None,
    roles: list[str] | None = None,
    audience: str = "aimesh",
    expires_in: int = 300,
    subject: str = "tester",
    issuer: str = "aimesh-gateway",
) -> str:
    """An HS256 token as an identity provider would issue it."""
    import time

    import jwt

    now = int(time.time())
    claims: dict[str, object] = {
        "sub": subject,
        "aud": audience,
        "iss": issuer,
        "iat": now,
        "exp": now + expires_in,
    }
    if tenant is not None:
        claims["tenant_id"] = tenant
    if roles is not None:
        claims["roles"] = roles
    return jwt.encode(claims, secret, algorithm="HS256")
