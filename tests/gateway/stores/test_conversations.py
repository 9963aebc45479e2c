"""Conversation metadata (stores/conversations.py) on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.auth.security import Principal, Role
from aimesh_gateway.core.config import default_database_url
from aimesh_gateway.db.engine import create_engine, session_factory
from aimesh_gateway.db.models import ConversationRecord
from aimesh_gateway.stores.conversations import TURN_MESSAGES, ConversationInfo, ConversationLog

CREATED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def principal(tenant: str, subject: str = "ann") -> Principal:
    return Principal(subject=subject, tenant_id=tenant, roles=frozenset({Role.USER}), method="jwt")


def info(
    conversation_id: str,
    *,
    title: str = "Pets",
    collection: str | None = None,
    model: str = "default",
    message_count: int = 0,
) -> ConversationInfo:
    return ConversationInfo(
        id=conversation_id,
        model=model,
        collection=collection,
        title=title,
        created_at=CREATED,
        message_count=message_count,
    )


def new_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def conversations(db_engine: AsyncEngine) -> ConversationLog:
    return ConversationLog(session_factory(db_engine))


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def row_of(log: ConversationLog, conversation_id: str) -> ConversationRecord | None:
    await log.drain()
    async with log.sessions() as session:
        return await session.get(ConversationRecord, conversation_id)


def test_info_from_the_routers_reply() -> None:
    reply = llm_pb2.Conversation(
        id="c1",
        model="default",
        collection="",
        title="x" * 300,
        created_at=CREATED.timestamp(),
        messages=[llm_pb2.ChatMessage(role="user", content="secret words")] * 3,
    )
    got = ConversationInfo.from_router(reply)
    assert (got.id, got.model, got.collection, got.created_at) == ("c1", "default", None, CREATED)
    assert got.title == "x" * 200  # the column's width
    assert got.message_count == 3  # counted from the messages when the count is unset
    listed = ConversationInfo.from_router(
        llm_pb2.Conversation(id="c2", collection="kb", message_count=8)
    )
    assert (listed.collection, listed.message_count) == ("kb", 8)


async def test_lifecycle_start_turns_delete(conversations: ConversationLog, tenant: str) -> None:
    ann = principal(tenant)
    cid = new_id()
    conversations.started(ann, info(cid, collection="kb"))
    row = await row_of(conversations, cid)
    assert row is not None
    assert (row.tenant_id, row.subject, row.model, row.collection, row.title) == (
        tenant,
        "ann",
        "default",
        "kb",
        "Pets",
    )
    assert row.created_at == row.updated_at == CREATED
    assert (row.message_count, row.deleted_at) == (0, None)

    for _ in range(2):
        conversations.turn(ann, cid, "default")
    row = await row_of(conversations, cid)
    assert row is not None
    assert row.message_count == 2 * TURN_MESSAGES
    assert row.updated_at > CREATED
    assert row.created_at == CREATED
    last_activity = row.updated_at

    conversations.deleted(ann, cid)
    row = await row_of(conversations, cid)
    assert row is not None
    assert row.deleted_at is not None
    assert row.deleted_at >= last_activity
    first_deletion = row.deleted_at
    conversations.deleted(ann, cid)  # once: a second delete keeps the first time
    row = await row_of(conversations, cid)
    assert row is not None
    assert row.deleted_at == first_deletion
    assert row.updated_at == last_activity  # a deletion is no activity


async def test_a_turn_reported_before_the_start_converges(
    conversations: ConversationLog, tenant: str
) -> None:
    """Writes race (several workers): whichever lands first, the row ends up the same."""
    ann = principal(tenant)
    cid = new_id()
    conversations.turn(ann, cid, "fallback-alias")
    first = await row_of(conversations, cid)
    assert first is not None
    assert (first.title, first.model, first.collection, first.message_count) == (
        "",
        "fallback-alias",
        None,
        TURN_MESSAGES,
    )
    conversations.started(ann, info(cid, collection="kb"))
    row = await row_of(conversations, cid)
    assert row is not None
    assert (row.title, row.model, row.collection, row.message_count) == (
        "Pets",
        "default",
        "kb",
        TURN_MESSAGES,
    )
    assert row.created_at == CREATED
    assert row.updated_at == first.updated_at  # the turn stays the last activity


async def test_seen_fills_in_and_never_lowers_the_count(
    conversations: ConversationLog, tenant: str
) -> None:
    ann = principal(tenant)
    older = new_id()  # started before the gateway recorded conversations
    conversations.seen(ann, info(older, title="Old one", message_count=6))
    row = await row_of(conversations, older)
    assert row is not None
    assert (row.title, row.message_count, row.updated_at) == ("Old one", 6, CREATED)

    conversations.turn(ann, older, "default")
    conversations.seen(ann, info(older, title="Old one", message_count=6))  # read before the turn
    row = await row_of(conversations, older)
    assert row is not None
    assert row.message_count == 6 + TURN_MESSAGES
    conversations.seen(ann, info(older, title="Old one", message_count=12))  # a turn was missed
    row = await row_of(conversations, older)
    assert row is not None
    assert row.message_count == 12


async def test_concurrent_turns_all_count(conversations: ConversationLog, tenant: str) -> None:
    ann = principal(tenant)
    cid = new_id()
    for _ in range(6):  # the first ones race to insert the row
        conversations.turn(ann, cid, "default")
    row = await row_of(conversations, cid)
    assert row is not None
    assert row.message_count == 6 * TURN_MESSAGES


async def test_deleting_an_unknown_conversation_writes_nothing(
    conversations: ConversationLog, tenant: str
) -> None:
    cid = new_id()
    conversations.deleted(principal(tenant), cid)
    assert await row_of(conversations, cid) is None


async def test_another_tenant_never_touches_a_row(
    conversations: ConversationLog, tenant: str
) -> None:
    cid = new_id()
    conversations.started(principal(tenant), info(cid))
    await conversations.drain()
    intruder = principal(f"x-{tenant}", "mallory")
    conversations.turn(intruder, cid, "default")
    conversations.seen(intruder, info(cid, title="mine now", message_count=50))
    conversations.deleted(intruder, cid)
    row = await row_of(conversations, cid)
    assert row is not None
    assert (row.tenant_id, row.subject, row.title, row.message_count, row.deleted_at) == (
        tenant,
        "ann",
        "Pets",
        0,
        None,
    )
    assert await conversations.recent(f"x-{tenant}") == []


async def test_recent_filters_and_orders(conversations: ConversationLog, tenant: str) -> None:
    ann, bob = principal(tenant), principal(tenant, "bob")
    first, second, gone = new_id(), new_id(), new_id()
    conversations.started(ann, info(first, title="first"))
    conversations.started(bob, info(second, title="second"))
    conversations.started(bob, info(gone, title="gone"))
    conversations.started(principal(f"o-{tenant}"), info(new_id(), title="other tenant"))
    await conversations.drain()
    conversations.turn(bob, second, "default")
    await conversations.drain()
    conversations.turn(ann, first, "default")  # the most recent activity
    conversations.deleted(bob, gone)
    await conversations.drain()

    assert [r.title for r in await conversations.recent(tenant)] == ["first", "second"]
    assert [r.title for r in await conversations.recent(tenant, include_deleted=True)] == [
        "first",
        "second",
        "gone",
    ]
    assert [r.title for r in await conversations.recent(tenant, subject="bob")] == ["second"]
    assert [
        r.title for r in await conversations.recent(tenant, subject="bob", include_deleted=True)
    ] == [
        "second",
        "gone",
    ]
    assert [r.title for r in await conversations.recent(tenant, limit=1)] == ["first"]
    assert await conversations.recent(tenant, subject="nobody") == []


async def test_a_database_failure_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No table (the database was never migrated): the writes fail, the callers never see it."""
    engine = create_engine(default_database_url(tmp_path))
    try:
        log = ConversationLog(session_factory(engine))
        ann = principal("acme")
        with caplog.at_level(logging.WARNING, logger="aimesh.gateway.conversations"):
            log.started(ann, info(new_id()))
            log.turn(ann, new_id(), "default")
            log.deleted(ann, new_id())
            await asyncio.wait_for(log.drain(), 30)
        warnings = [r for r in caplog.records if r.name == "aimesh.gateway.conversations"]
        assert len(warnings) == 3
        assert all("could not store conversation metadata" in r.getMessage() for r in warnings)
        async with engine.connect() as connection:
            tables = await connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
            assert tables.all() == []
    finally:
        await engine.dispose()


async def test_rows_hold_no_message_text(conversations: ConversationLog, tenant: str) -> None:
    """Only metadata is written: no column of the row holds any message text."""
    cid = new_id()
    reply = llm_pb2.Conversation(
        id=cid,
        model="default",
        title="Pets",
        created_at=CREATED.timestamp(),
        messages=[
            llm_pb2.ChatMessage(role="user", content="my cat is called Whiskers"),
            llm_pb2.ChatMessage(role="assistant", content="Hello Whiskers"),
        ],
    )
    conversations.seen(principal(tenant), ConversationInfo.from_router(reply))
    await conversations.drain()
    async with conversations.sessions() as session:
        query = select(ConversationRecord.__table__).where(ConversationRecord.id == cid)
        row = (await session.execute(query)).one()
    assert row.message_count == 2
    assert "Whiskers" not in repr(tuple(row))
