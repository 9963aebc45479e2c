"""SQL databases of the services: one way to open an engine and to run versioned migrations.

Each service that keeps SQL state (the gateway, retrieval's ingestion jobs, the router's
conversations) has its own Alembic folder inside its package and names it with a
:class:`Migrations`. Every service runs its migrations the same way, at start-up and from
``make migrate``: :func:`migrate` brings the schema to the newest revision under a lock
(several replicas start together), each service recording its revision in its own version
table, so services sharing one PostgreSQL database do not collide.

Databases created before a service had migrations hold its tables but no version table:
the service's ``adopt`` hook recognises them and names the revision they are at (after
moving them into that revision's shape if needed), which is stamped before upgrading, all
in the migration's one transaction, so no data is lost.

Needs SQLAlchemy (async) and Alembic, which only the services that keep SQL state install.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger("aimesh.db")

Adopt = Callable[[Connection, Config], str | None]
"""Looks at a database without a version table (inside the migration's transaction, with
the Alembic configuration that runs on it) and returns the revision its tables are at,
after moving them into shape if needed; None when it holds none of them."""


@dataclass(frozen=True)
class Migrations:
    """One service's migrations."""

    # For logs: "gateway", "retrieval", "llm-router".
    service: str
    # The Alembic folder (env.py, versions/) inside the service's package.
    script_location: Path
    # Where the revision is recorded; one table per service.
    version_table: str
    # Id of the PostgreSQL advisory lock held while this service migrates (any constant,
    # one per service).
    lock_id: int
    # Recognises a database created before the service had migrations.
    adopt: Adopt | None = None


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine: aiosqlite for ``sqlite+aiosqlite:///``, asyncpg for
    ``postgresql+asyncpg://``. SQLite gets WAL, a busy timeout and foreign keys, so several
    processes can share one file."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
            cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=10)


def sqlite_url(path: Path) -> str:
    """The URL of a SQLite file (its folder created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{path.resolve()}"


def alembic_config(migrations: Migrations, connection: Connection) -> Config:
    """Alembic's configuration for running ``migrations`` on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(migrations.script_location))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = migrations.version_table
    return config


def run_migrations(metadata: MetaData) -> None:
    """The body of every service's ``env.py``: run on the connection :func:`migrate` hands
    over, recording the revision in the service's own version table."""
    config = context.config
    connection = config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run migrations through aimesh_common.db.migrate (make migrate)")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=config.attributes.get("version_table", "alembic_version"),
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def existing_tables(connection: Connection, expected: Mapping[str, Set[str]]) -> bool:
    """True when every table of ``expected`` exists with at least its columns, False when
    none exists; raises RuntimeError for anything in between (a database this code did not
    create: adopting it could lose data)."""
    inspector = inspect(connection)
    present = {name for name in expected if inspector.has_table(name)}
    if not present:
        return False
    problems = [f"table {name} is missing" for name in expected if name not in present]
    for name in sorted(present):
        columns = {column["name"] for column in inspector.get_columns(name)}
        missing = sorted(expected[name] - columns)
        if missing:
            problems.append(f"table {name} lacks {', '.join(missing)}")
    if problems:
        raise RuntimeError(f"cannot adopt the existing tables: {'; '.join(problems)}")
    return True


def _upgrade(connection: Connection, migrations: Migrations) -> None:
    if connection.dialect.name == "sqlite":
        # The driver would begin a transaction only at the first INSERT or UPDATE, leaving
        # CREATE, ALTER and DROP before it outside: begin it now, so a failed migration or
        # adoption leaves the database as it was.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    if connection.dialect.name == "postgresql":
        # Several workers or replicas start at once: one migrates, the others wait for it.
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": migrations.lock_id})
    config = alembic_config(migrations, connection)
    if migrations.adopt is not None and not inspect(connection).has_table(migrations.version_table):
        revision = migrations.adopt(connection, config)
        if revision is not None:
            log.info(
                "adopting tables created before migrations",
                extra={"service": migrations.service, "revision": revision},
            )
            command.stamp(config, revision)
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine, migrations: Migrations) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already).

    Concurrent callers (several workers starting together) are serialized: by an advisory
    lock on PostgreSQL, by an exclusive lock on a file beside the database on SQLite.
    """
    database = engine.url.database
    if engine.url.get_backend_name() == "sqlite" and database and database != ":memory:":
        lock_file = await asyncio.to_thread(_lock_file, Path(database + ".migrate-lock"))
        try:
            await _migrate(engine, migrations)
        finally:
            lock_file.close()  # closing releases the lock
    else:
        await _migrate(engine, migrations)
    log.info("database schema is up to date", extra={"service": migrations.service})


def _lock_file(path: Path) -> IO[bytes]:
    handle = path.open("ab")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


async def _migrate(engine: AsyncEngine, migrations: Migrations) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade, migrations)


async def current_revision(engine: AsyncEngine, migrations: Migrations) -> str | None:
    """The revision recorded in the service's version table; None before the first run."""
    table = migrations.version_table
    async with engine.connect() as connection:
        has_table = await connection.run_sync(lambda sync: inspect(sync).has_table(table))
        if not has_table:
            return None
        row = (await connection.execute(text(f"SELECT version_num FROM {table}"))).first()  # noqa: S608 - a constant
        return None if row is None else str(row[0])


def migrate_command(url: str, migrations: Migrations) -> None:
    """``make migrate`` for one service: migrate the database at ``url`` and say where it is."""

    async def run() -> None:
        engine = create_engine(url, pool_size=1)
        try:
            await migrate(engine, migrations)
            revision = await current_revision(engine, migrations)
            print(f"{migrations.service}: database at revision {revision}")
        finally:
            await engine.dispose()

    asyncio.run(run())
