"""The engine, sessions and migrations (applied at start and by ``make migrate``)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
from pathlib import Path
from typing import IO

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

log = logging.getLogger("aimesh.gateway.db")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant: one advisory lock id for "the gateway is migrating" on PostgreSQL.
_PG_MIGRATION_LOCK = 0x61696D657368


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and foreign keys, so several workers
    can share one file."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
            cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Several workers or replicas start at once: one migrates, the others wait for it.
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_MIGRATION_LOCK})
    command.upgrade(_alembic_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already).

    Concurrent callers (several workers starting together) are serialized: by an advisory
    lock on PostgreSQL, by an exclusive lock on a file beside the database on SQLite.
    """
    database = engine.url.database
    if engine.url.get_backend_name() == "sqlite" and database and database != ":memory:":
        lock_file = await asyncio.to_thread(_lock_file, Path(database + ".migrate-lock"))
        try:
            await _migrate(engine)
        finally:
            lock_file.close()  # closing releases the lock
    else:
        await _migrate(engine)
    log.info("database schema is up to date")


def _lock_file(path: Path) -> IO[bytes]:
    handle = path.open("ab")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


async def _migrate(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        has_table = await connection.run_sync(
            lambda sync: sync.dialect.has_table(sync, "alembic_version")
        )
        if not has_table:
            return None
        row = (await connection.execute(text("SELECT version_num FROM alembic_version"))).first()
        return None if row is None else str(row[0])
