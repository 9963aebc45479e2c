"""Migrations and the stores on both backends: SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg  # type: ignore[import-untyped]
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from aimesh_gateway.auth.keys import KeyStore, parse_key
from aimesh_gateway.auth.users import UsernameTaken, UserStore
from aimesh_gateway.core.config import Settings
from aimesh_gateway.db.engine import (
    _alembic_config,
    create_engine,
    current_revision,
    migrate,
    session_factory,
)
from aimesh_gateway.db.models import Base
from tests.gateway.conftest import PG_ADMIN_DSN
from tests.gateway.helpers import JWT_SECRET

HEAD = "0008"


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def test_migrations_create_every_table_and_are_idempotent(db_engine: AsyncEngine) -> None:
    await migrate(db_engine)  # a second run is a no-op
    assert await current_revision(db_engine) == HEAD
    async with db_engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        usage_columns = await connection.run_sync(
            lambda sync: {c["name"] for c in inspect(sync).get_columns("usage_records")}
        )
        usage_indexes = await connection.run_sync(
            lambda sync: {i["name"] for i in inspect(sync).get_indexes("usage_records")}
        )
    assert {"api_keys", "users", "refresh_tokens", "tenant_limits", "usage_records"} <= tables
    assert {"feedback", "budgets"} <= tables
    assert {"files", "file_contents", "vector_stores", "vector_store_files"} <= tables
    assert {"request_id", "provider", "prompt_version", "estimated", "cost_usd"} <= usage_columns
    assert "cost_micros" not in usage_columns  # one cost of record: cost_usd
    assert "ix_usage_records_request_id" in usage_indexes
    assert "conversations" not in tables  # 0003 made it, 0004 dropped it (the router owns it)


async def test_the_migrations_build_exactly_the_models(db_engine: AsyncEngine) -> None:
    """A column or index added to a model without a migration (or the reverse) fails here."""

    def differences(connection: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))

    async with db_engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_0002_upgrades_a_0001_database_with_rows(database_url: str) -> None:
    """Usage rows written before 0002 survive it, with empty request id/provider/prompt."""
    suffix = uuid.uuid4().hex[:8]
    if database_url.startswith("postgresql"):
        name = f"aimesh_gw_0001_{suffix}"
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = database_url.rsplit("/", 1)[0] + f"/{name}"
    else:
        url = database_url.replace("gateway.db", f"old-{suffix}.db")
    engine = create_engine(url)
    try:

        def upgrade_to(connection: Connection, revision: str) -> None:
            command.upgrade(_alembic_config(connection), revision)

        async with engine.begin() as connection:
            await connection.run_sync(upgrade_to, "0001")
        assert await current_revision(engine) == "0001"
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO usage_records (tenant_id, subject, route, model, prompt_tokens,"
                    " completion_tokens, created_at) VALUES ('t', 's', '/v1/ask', 'default', 3,"
                    " 4, :at)"
                ),
                {"at": datetime(2026, 1, 2, tzinfo=UTC).replace(tzinfo=None)},
            )
        await migrate(engine)
        assert await current_revision(engine) == HEAD
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT prompt_tokens, request_id, provider, prompt_version"
                        " FROM usage_records"
                    )
                )
            ).one()
        assert tuple(row) == (3, "", "", "")
        async with engine.begin() as connection:  # and back down to 0001
            await connection.run_sync(downgrade_to, "0001")
        assert await current_revision(engine) == "0001"
    finally:
        await engine.dispose()
        if database_url.startswith("postgresql"):
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.close()


def downgrade_to(connection: Connection, revision: str) -> None:
    command.downgrade(_alembic_config(connection), revision)


CONVERSATION_COLUMNS = {  # name: nullable, as 0003 made them
    "id": False,
    "tenant_id": False,
    "subject": False,
    "model": False,
    "collection": True,
    "title": False,
    "created_at": False,
    "updated_at": False,
    "message_count": False,
    "deleted_at": True,
}
CONVERSATION_INDEXES = {
    "ix_conversations_tenant_updated": ["tenant_id", "updated_at"],
    "ix_conversations_tenant_subject": ["tenant_id", "subject"],
}


async def test_0003_adds_and_0004_drops_the_conversations_table(database_url: str) -> None:
    """0003 on a 0002 database: the metadata table with its indexes; 0004 drops it (the
    router owns conversation metadata); down to 0003 makes it again, down to 0002 drops it."""
    suffix = uuid.uuid4().hex[:8]
    if database_url.startswith("postgresql"):
        name = f"aimesh_gw_0002_{suffix}"
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = database_url.rsplit("/", 1)[0] + f"/{name}"
    else:
        url = database_url.replace("gateway.db", f"v2-{suffix}.db")
    engine = create_engine(url)

    async def tables() -> set[str]:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))

    async def conversations_table() -> tuple[dict[str, bool], dict[str | None, list[str | None]]]:
        async with engine.connect() as connection:
            columns = await connection.run_sync(
                lambda sync: {
                    c["name"]: c["nullable"] for c in inspect(sync).get_columns("conversations")
                }
            )
            indexes = await connection.run_sync(
                lambda sync: {
                    i["name"]: i["column_names"] for i in inspect(sync).get_indexes("conversations")
                }
            )
        return columns, indexes

    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(_alembic_config(sync), "0002"))
        assert "conversations" not in await tables()
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(_alembic_config(sync), "0003"))
        assert await current_revision(engine) == "0003"
        assert await conversations_table() == (CONVERSATION_COLUMNS, CONVERSATION_INDEXES)
        await migrate(engine)
        assert await current_revision(engine) == HEAD
        assert "conversations" not in await tables()
        async with engine.begin() as connection:
            await connection.run_sync(downgrade_to, "0003")
        assert await current_revision(engine) == "0003"
        assert await conversations_table() == (CONVERSATION_COLUMNS, CONVERSATION_INDEXES)
        async with engine.begin() as connection:
            await connection.run_sync(downgrade_to, "0002")
        assert await current_revision(engine) == "0002"
        assert "conversations" not in await tables()
        assert {"usage_records", "feedback"} <= await tables()
    finally:
        await engine.dispose()
        if database_url.startswith("postgresql"):
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.close()


async def test_concurrent_migrations_serialize(database_url: str) -> None:
    """Several workers starting at once on a fresh database: all succeed, one schema."""
    suffix = uuid.uuid4().hex[:8]
    if database_url.startswith("postgresql"):
        name = f"aimesh_gw_fresh_{suffix}"
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        fresh = database_url.rsplit("/", 1)[0] + f"/{name}"
    else:
        fresh = database_url.replace("gateway.db", f"fresh-{suffix}.db")
    engines = [create_engine(fresh) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(engine) for engine in engines))
        assert await current_revision(engines[0]) == HEAD
    finally:
        for engine in engines:
            await engine.dispose()
        if database_url.startswith("postgresql"):
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.close()


async def test_key_lifecycle(db_engine: AsyncEngine) -> None:
    store = KeyStore(session_factory(db_engine))
    tenant = _tenant()
    created = await store.create(tenant_id=tenant, roles=["user", "editor", "user"], name="ci")
    parsed = parse_key(created.key)
    assert parsed is not None
    assert parsed[0] == created.record.prefix
    assert created.record.roles == ("editor", "user")

    verified = await store.verify(created.key)
    assert verified is not None
    assert verified.tenant_id == tenant
    assert (await store.get(tenant, created.record.id)) is not None
    listed = await store.list(tenant)
    assert [r.id for r in listed] == [created.record.id]
    assert listed[0].last_used_at is not None  # the verification was recorded

    # Only a hash is stored: the secret appears in no column.
    async with db_engine.connect() as connection:
        rows = (await connection.exec_driver_sql("SELECT * FROM api_keys")).all()
    assert all(parsed[1] not in str(row) for row in rows)

    # A wrong secret with the right prefix, and another tenant, see nothing.
    assert await store.verify(f"am_{parsed[0]}_{'x' * 43}") is None
    assert await store.get(_tenant(), created.record.id) is None
    assert await store.revoke(_tenant(), created.record.id) is None

    revoked = await store.revoke(tenant, created.record.id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert await store.verify(created.key) is None


async def test_key_cache_keeps_only_recently_used_keys(db_engine: AsyncEngine) -> None:
    """Issue 28: the verification cache is swept, not one entry per key ever used."""
    store = KeyStore(session_factory(db_engine), cache_seconds=5.0)
    keys = [(await store.create(tenant_id=_tenant(), roles=["user"])).key for _ in range(5)]
    for key in keys:
        assert await store.verify(key) is not None
    assert store.cached == 10  # a verification and a last use per key
    now = time.monotonic()
    store.sweep(now)  # all still in use
    assert store.cached == 10
    store.sweep(now + 6)  # past the trust window: verifications go, last uses stay
    assert store.cached == 5
    store.sweep(now + 61)  # past the last-use granularity too
    assert store.cached == 0
    assert all([await store.verify(key) is not None for key in keys])  # verified afresh


async def test_expired_key_is_refused(db_engine: AsyncEngine) -> None:
    store = KeyStore(session_factory(db_engine))
    expired = await store.create(
        tenant_id=_tenant(), roles=["user"], expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    live = await store.create(
        tenant_id=_tenant(), roles=["user"], expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    assert await store.verify(expired.key) is None
    assert await store.verify(live.key) is not None


async def test_users_passwords_and_refresh_rotation(db_engine: AsyncEngine) -> None:
    settings = Settings(jwt_secret=JWT_SECRET)
    store = UserStore(session_factory(db_engine), settings)
    name = f"alice-{uuid.uuid4().hex[:6]}"
    user = await store.create(
        username=name, password="correct horse battery", tenant_id="acme", roles=["editor"]
    )
    with pytest.raises(UsernameTaken):
        await store.create(
            username=name, password="another password!", tenant_id="x", roles=["user"]
        )
    assert await store.check_password(name, "wrong password!!") is None
    assert await store.check_password("nobody-" + name, "correct horse battery") is None
    assert await store.check_password(name, "correct horse battery") == user

    async with db_engine.connect() as connection:
        rows = (await connection.exec_driver_sql("SELECT password_hash FROM users")).all()
    assert all(row[0].startswith("$argon2id$") for row in rows)

    first = await store.issue(user)
    second = await store.refresh(first.refresh_token)
    assert second is not None
    assert second.refresh_token != first.refresh_token
    assert await store.refresh(first.refresh_token) is None  # used once
    assert await store.refresh("not-a-token") is None
