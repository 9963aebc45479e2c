"""The SQL conversation store's migrations: an empty SQLite file and an empty PostgreSQL
database, a SQLite file written by the router before it had migrations (adopted with its
conversations), a PostgreSQL database shared with the gateway's tables, and 0002 down."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from aimesh_common import db
from aimesh_llm_router.conversations import Base, SqlConversationStore, StoredMessage
from aimesh_llm_router.migrations import MIGRATIONS
from tests.conftest import migrate_empty_database, migrated_as_models, new_postgres_database

HEAD = "0003"
TABLES = {
    "llm_router_conversations",
    "llm_router_conversation_messages",
    "llm_router_responses",
    "alembic_version_llm_router",
}

# What the router ran on its SQLite file before it had migrations.
BEFORE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, user_id TEXT NOT NULL,
    model TEXT NOT NULL, collection TEXT NOT NULL, title TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS conversation_messages (
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    position INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
    PRIMARY KEY (conversation_id, position));
CREATE INDEX IF NOT EXISTS conversations_by_owner
    ON conversations (tenant_id, user_id, created_at);
"""


async def _tables(url: str) -> set[str]:
    engine = db.create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


async def test_an_empty_database_is_migrated_to_exactly_the_models(
    empty_database_url: str,
) -> None:
    """A column or index added to a model without a migration (or the reverse) fails here."""
    assert await migrate_empty_database(empty_database_url, MIGRATIONS, Base.metadata) == TABLES


async def test_a_sqlite_file_of_the_code_before_migrations_is_adopted(tmp_path: Path) -> None:
    """The old tables are renamed, every conversation keeps its messages, gains its count and
    last activity, and the schema equals the models'."""
    path = tmp_path / "conversations.db"
    with sqlite3.connect(path) as old:
        old.executescript(BEFORE_MIGRATIONS)
        old.executemany(
            "INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                ("c1", "acme", "ann", "default", "", "Pets", 1000.5),
                ("c2", "acme", "bob", "fast", "kb", "", 2000.25),
            ],
        )
        old.executemany(
            "INSERT INTO conversation_messages VALUES (?, ?, ?, ?)",
            [("c1", 0, "user", "Hi"), ("c1", 1, "assistant", "Hello")],
        )
    url = f"sqlite+aiosqlite:///{path}"
    store = SqlConversationStore(url)
    await store.start()
    try:
        first = await store.get("acme", "ann", "c1")
        assert [(m.role, m.content) for m in first.messages] == [
            ("user", "Hi"),
            ("assistant", "Hello"),
        ]
        assert (first.title, first.created_at, first.updated_at) == ("Pets", 1000.5, 1000.5)
        listed = await store.list_tenant("acme", user_id=None, include_deleted=False, limit=10)
        assert [(r.id, r.user_id, r.model, r.collection, r.message_count) for r in listed] == [
            ("c2", "bob", "fast", "kb", 0),
            ("c1", "ann", "default", "", 2),
        ]
        # Turns continue after the adopted messages.
        await store.append("acme", "ann", "c1", [StoredMessage("user", "Again")])
        again = await store.get("acme", "ann", "c1")
        assert [m.content for m in again.messages] == ["Hi", "Hello", "Again"]
        assert again.updated_at > 1000.5
    finally:
        await store.aclose()
    assert await migrated_as_models(url, MIGRATIONS, Base.metadata) == TABLES


async def test_a_half_old_sqlite_file_is_refused(tmp_path: Path) -> None:
    """Only a database the old code made is adopted: anything else is left as it is."""
    path = tmp_path / "conversations.db"
    with sqlite3.connect(path) as old:
        old.executescript(BEFORE_MIGRATIONS)
        old.execute("DROP TABLE conversation_messages")
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        with pytest.raises(RuntimeError, match="conversation_messages is missing"):
            await db.migrate(engine, MIGRATIONS)
        assert await db.current_revision(engine, MIGRATIONS) is None
    finally:
        await engine.dispose()


async def test_a_postgres_database_shared_with_the_gateway_keeps_both() -> None:
    """The gateway's own ``conversations`` table and version table are left alone."""
    async with new_postgres_database("aimesh_shared") as url:
        engine = db.create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    text("CREATE TABLE conversations (id VARCHAR(64) PRIMARY KEY, subject TEXT)")
                )
                await connection.execute(
                    text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
                )
                await connection.execute(text("INSERT INTO conversations VALUES ('g1', 's')"))
                await connection.execute(text("INSERT INTO alembic_version VALUES ('0003')"))
            await db.migrate(engine, MIGRATIONS)
            assert await db.current_revision(engine, MIGRATIONS) == HEAD
            async with engine.connect() as connection:
                gateway = (await connection.execute(text("SELECT * FROM conversations"))).all()
                version = (await connection.execute(text("SELECT * FROM alembic_version"))).all()
        finally:
            await engine.dispose()
        assert [tuple(row) for row in gateway] == [("g1", "s")]
        assert [tuple(row) for row in version] == [("0003",)]
        assert await _tables(url) == TABLES | {"conversations", "alembic_version"}


async def test_0002_goes_down_to_0001_and_up_again(empty_database_url: str) -> None:
    store = SqlConversationStore(empty_database_url)
    await store.start()
    try:
        kept = await store.create("acme", "ann", "default", "", "kept")
        await store.append("acme", "ann", kept.id, [StoredMessage("user", "Hi")])
        gone = await store.create("acme", "ann", "default", "", "gone")
        await store.delete("acme", "ann", gone.id)
    finally:
        await store.aclose()

    engine = db.create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(
                lambda sync: command.downgrade(db.alembic_config(MIGRATIONS, sync), "0001")
            )
        assert await db.current_revision(engine, MIGRATIONS) == "0001"
        async with engine.connect() as connection:
            rows = (
                await connection.execute(text("SELECT id, title FROM llm_router_conversations"))
            ).all()
        assert [tuple(row) for row in rows] == [(kept.id, "kept")]
        await db.migrate(engine, MIGRATIONS)
        assert await db.current_revision(engine, MIGRATIONS) == HEAD
    finally:
        await engine.dispose()
    store = SqlConversationStore(empty_database_url)
    try:
        again = await store.get("acme", "ann", kept.id)
        assert (again.message_count, [m.content for m in again.messages]) == (1, ["Hi"])
        assert again.updated_at == again.created_at  # back-filled from the creation
    finally:
        await store.aclose()


async def test_a_failed_adoption_leaves_the_old_file_as_it_was(tmp_path: Path) -> None:
    """The old schema let an id be NULL; 0001's does not: the copy fails, and the whole
    adoption (new tables, version table) is rolled back."""
    path = tmp_path / "conversations.db"
    with sqlite3.connect(path) as old:
        old.executescript(BEFORE_MIGRATIONS)
        old.execute(
            "INSERT INTO conversations VALUES (NULL, 'acme', 'ann', 'default', '', 'x', 1.0)"
        )
    url = f"sqlite+aiosqlite:///{path}"
    engine = db.create_engine(url)
    try:
        with pytest.raises(IntegrityError):
            await db.migrate(engine, MIGRATIONS)
    finally:
        await engine.dispose()
    assert await _tables(url) == {"conversations", "conversation_messages"}
    with sqlite3.connect(path) as old:
        assert old.execute("SELECT title FROM conversations").fetchall() == [("x",)]
