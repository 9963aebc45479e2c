"""The engine, sessions and migrations (run by the kit's one migration runner)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aimesh_common import db

MIGRATIONS = db.Migrations(
    service="gateway",
    script_location=Path(__file__).parent / "migrations",
    # Alembic's default name: the gateway's databases have recorded their revision there
    # since the first migration.
    version_table="alembic_version",
    lock_id=0x61696D657368,
)


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and foreign keys, so several workers
    can share one file."""
    return db.create_engine(url)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(connection: Connection) -> Config:
    return db.alembic_config(MIGRATIONS, connection)


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already)."""
    await db.migrate(engine, MIGRATIONS)


async def current_revision(engine: AsyncEngine) -> str | None:
    return await db.current_revision(engine, MIGRATIONS)
