"""Conversations kept server-side: Redis when ``AIMESH_REDIS_URL`` is set, else SQL (a
SQLite file by default, PostgreSQL when ``AIMESH_CONVERSATIONS_DATABASE_URL`` names one).

A conversation belongs to one user of one tenant. Every read and write names the owner,
and a conversation of another owner is reported exactly like a missing one (NOT_FOUND),
so ids cannot be probed across users or tenants. Messages are only ``user`` and
``assistant`` turns; the router's system prompt is never stored or shown.

The router is the one owner of a conversation's metadata too: owner, settings (model,
collection, title), size, creation and last activity. Deleting a conversation removes its
messages and marks it deleted; its metadata stays for the tenant's admins
(:meth:`ConversationStore.list_tenant`, the ListTenantConversations RPC).

SQL layout: ``llm_router_conversations`` (one row per conversation) and
``llm_router_conversation_messages`` (one row per message), created and changed by the
migrations in ``aimesh_llm_router/migrations``.

Redis layout (``<prefix>`` defaults to ``aimesh:conv:``): a hash ``<prefix><id>`` with
the owner, settings, times and count, a list ``<prefix><id>:messages`` of JSON messages,
per owner a sorted set ``<prefix>owner:<hash of tenant and user>`` of their conversation
ids by creation time (their listing), and per tenant a sorted set
``<prefix>tenant:<hash of tenant>`` of its conversation ids by last activity (the admins'
listing). Conversations stored before the hash held times and counts read their creation
as last activity and count their list; they reach the tenant's set on their next turn.

The same store keeps the responses of the OpenAI Responses API (the gateway builds them;
``previous_response_id`` continues from their stored context), owned like conversations and
forgotten after a retention period: SQL table ``llm_router_responses`` (expired rows are
invisible at once and purged as new responses are stored), Redis string
``<prefix>resp:<id>`` (JSON, with the retention as its TTL).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal, cast

import redis.asyncio as redis_asyncio
from sqlalchemy import (
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    Text,
    delete,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aimesh_common import db
from aimesh_common.errors import AlreadyExists, NotFound, Unavailable
from aimesh_llm_router.migrations import MIGRATIONS

StoredRole = Literal["user", "assistant"]


@dataclass(frozen=True)
class StoredMessage:
    role: StoredRole
    content: str


@dataclass
class ConversationRecord:
    id: str
    tenant_id: str
    user_id: str
    model: str
    collection: str
    title: str
    created_at: float
    messages: list[StoredMessage] = field(default_factory=list)
    # How many messages there are (set also by listings, which leave messages out); a
    # deleted conversation keeps the count it had.
    message_count: int = 0
    # Last activity (Unix seconds): the creation, then the storing of the newest turn.
    updated_at: float = 0.0
    # When its owner deleted it (Unix seconds); None while it exists.
    deleted_at: float | None = None


def _not_found(conversation_id: str) -> NotFound:
    return NotFound(f"conversation {conversation_id!r} does not exist")


@dataclass(frozen=True)
class ResponseRecord:
    """A Responses-API response as the gateway built it; the JSON members are its own."""

    id: str
    tenant_id: str
    user_id: str
    previous_response_id: str
    created_at: float
    expires_at: float
    response_json: str
    input_items_json: str
    context_json: str


def _response_not_found(response_id: str) -> NotFound:
    return NotFound(f"response {response_id!r} does not exist")


class ConversationStore(ABC):
    """Where conversations live; every method but ``list_tenant`` checks the owner, and
    only ``list_tenant`` sees deleted conversations."""

    async def create(
        self, tenant_id: str, user_id: str, model: str, collection: str, title: str
    ) -> ConversationRecord:
        now = time.time()
        record = ConversationRecord(
            id=uuid.uuid4().hex,
            tenant_id=tenant_id,
            user_id=user_id,
            model=model,
            collection=collection,
            title=title,
            created_at=now,
            updated_at=now,
        )
        await self._insert(record)
        return record

    @abstractmethod
    async def _insert(self, record: ConversationRecord) -> None: ...

    @abstractmethod
    async def get(self, tenant_id: str, user_id: str, conversation_id: str) -> ConversationRecord:
        """The conversation with its messages; NotFound unless this user of this tenant owns it."""

    @abstractmethod
    async def append(
        self, tenant_id: str, user_id: str, conversation_id: str, messages: list[StoredMessage]
    ) -> None:
        """Add messages at the end (owner checked); moves the last activity to now."""

    @abstractmethod
    async def list_owned(
        self, tenant_id: str, user_id: str, limit: int
    ) -> list[ConversationRecord]:
        """This owner's newest ``limit`` conversations, newest first, without messages."""

    @abstractmethod
    async def delete(self, tenant_id: str, user_id: str, conversation_id: str) -> None:
        """Remove a conversation's messages and mark it deleted (owner checked)."""

    @abstractmethod
    async def list_tenant(
        self, tenant_id: str, *, user_id: str | None, include_deleted: bool, limit: int
    ) -> list[ConversationRecord]:
        """The tenant's conversations (of one owner when ``user_id`` is set), most recently
        active first, without messages: what the tenant's admins see."""

    @abstractmethod
    async def put_response(self, record: ResponseRecord) -> None:
        """Keep a response until ``record.expires_at``; AlreadyExists when its id is taken."""

    @abstractmethod
    async def get_response(self, tenant_id: str, user_id: str, response_id: str) -> ResponseRecord:
        """The response; NotFound unless this user of this tenant owns it and it has not
        expired."""

    @abstractmethod
    async def delete_response(self, tenant_id: str, user_id: str, response_id: str) -> None:
        """Forget a response (owner checked, NotFound as ``get_response``)."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare the store before the server takes calls (migrate its schema)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


# SQL


class Base(DeclarativeBase):
    """The conversation tables; aimesh_llm_router/migrations creates and changes them."""


class ConversationRow(Base):
    __tablename__ = "llm_router_conversations"
    __table_args__ = (
        Index("llm_router_conversations_by_owner", "tenant_id", "user_id", "created_at"),
        Index("llm_router_conversations_by_activity", "tenant_id", "updated_at"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    collection: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    # Unix seconds, as the RPCs report them.
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float, server_default="0")
    message_count: Mapped[int] = mapped_column(Integer, server_default="0")
    deleted_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class MessageRow(Base):
    __tablename__ = "llm_router_conversation_messages"

    conversation_id: Mapped[str] = mapped_column(
        Text, ForeignKey("llm_router_conversations.id"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    role: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)


class ResponseRow(Base):
    __tablename__ = "llm_router_responses"
    __table_args__ = (Index("llm_router_responses_by_expiry", "expires_at"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str] = mapped_column(Text)
    previous_response_id: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    response_json: Mapped[str] = mapped_column(Text)
    input_items_json: Mapped[str] = mapped_column(Text)
    context_json: Mapped[str] = mapped_column(Text)


def _response_record(row: ResponseRow) -> ResponseRecord:
    return ResponseRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        previous_response_id=row.previous_response_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        response_json=row.response_json,
        input_items_json=row.input_items_json,
        context_json=row.context_json,
    )


def _record(row: ConversationRow) -> ConversationRecord:
    return ConversationRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        model=row.model,
        collection=row.collection,
        title=row.title,
        created_at=row.created_at,
        message_count=row.message_count,
        updated_at=row.updated_at,
        deleted_at=row.deleted_at,
    )


@contextlib.contextmanager
def _sql_available() -> Iterator[None]:
    """A database that cannot be reached (or answer) is UNAVAILABLE, not an internal error."""
    try:
        yield
    except (DBAPIError, OSError) as error:
        raise Unavailable(f"conversation store unavailable: {type(error).__name__}") from None


class SqlConversationStore(ConversationStore):
    """Conversations in SQL: a SQLite file (one router) or PostgreSQL (shared by replicas)."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        """``migrate``: bring the schema to the newest revision in :meth:`start` (else
        ``make migrate`` does it before the router starts)."""
        self._engine = db.create_engine(url)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        self._migrate = migrate

    async def start(self) -> None:
        if self._migrate:
            with _sql_available():
                await db.migrate(self._engine, MIGRATIONS)

    async def aclose(self) -> None:
        await self._engine.dispose()

    async def _insert(self, record: ConversationRecord) -> None:
        with _sql_available():
            async with self._sessions.begin() as session:
                session.add(
                    ConversationRow(
                        id=record.id,
                        tenant_id=record.tenant_id,
                        user_id=record.user_id,
                        model=record.model,
                        collection=record.collection,
                        title=record.title,
                        created_at=record.created_at,
                        updated_at=record.updated_at,
                        message_count=0,
                        deleted_at=None,
                    )
                )

    @staticmethod
    def _owned(
        tenant_id: str, user_id: str, conversation_id: str
    ) -> tuple[ColumnElement[bool], ...]:
        """The conditions of "this user of this tenant owns it, and it was not deleted"."""
        return (
            ConversationRow.id == conversation_id,
            ConversationRow.tenant_id == tenant_id,
            ConversationRow.user_id == user_id,
            ConversationRow.deleted_at.is_(None),
        )

    async def get(self, tenant_id: str, user_id: str, conversation_id: str) -> ConversationRecord:
        with _sql_available():
            async with self._sessions() as session:
                row = await session.scalar(
                    select(ConversationRow).where(*self._owned(tenant_id, user_id, conversation_id))
                )
                if row is None:
                    raise _not_found(conversation_id)
                messages = await session.scalars(
                    select(MessageRow)
                    .where(MessageRow.conversation_id == conversation_id)
                    .order_by(MessageRow.position)
                )
                record = _record(row)
                record.messages = [
                    StoredMessage(cast(StoredRole, message.role), message.content)
                    for message in messages
                ]
        record.message_count = len(record.messages)
        return record

    async def append(
        self, tenant_id: str, user_id: str, conversation_id: str, messages: list[StoredMessage]
    ) -> None:
        with _sql_available():
            async with self._sessions.begin() as session:
                # Locked (on PostgreSQL) until the messages are in: concurrent turns of one
                # conversation take positions one after the other.
                row = await session.scalar(
                    select(ConversationRow)
                    .where(*self._owned(tenant_id, user_id, conversation_id))
                    .with_for_update()
                )
                if row is None:
                    raise _not_found(conversation_id)
                start = row.message_count
                session.add_all(
                    MessageRow(
                        conversation_id=conversation_id,
                        position=start + offset,
                        role=message.role,
                        content=message.content,
                    )
                    for offset, message in enumerate(messages)
                )
                row.message_count = start + len(messages)
                row.updated_at = max(row.updated_at, time.time())

    async def list_owned(
        self, tenant_id: str, user_id: str, limit: int
    ) -> list[ConversationRecord]:
        query = (
            select(ConversationRow)
            .where(
                ConversationRow.tenant_id == tenant_id,
                ConversationRow.user_id == user_id,
                ConversationRow.deleted_at.is_(None),
            )
            .order_by(ConversationRow.created_at.desc(), ConversationRow.id)
            .limit(limit)
        )
        with _sql_available():
            async with self._sessions() as session:
                return [_record(row) for row in await session.scalars(query)]

    async def delete(self, tenant_id: str, user_id: str, conversation_id: str) -> None:
        with _sql_available():
            async with self._sessions.begin() as session:
                marked = await session.execute(
                    update(ConversationRow)
                    .where(*self._owned(tenant_id, user_id, conversation_id))
                    .values(deleted_at=time.time())
                )
                if marked.rowcount == 0:  # type: ignore[attr-defined]
                    raise _not_found(conversation_id)
                await session.execute(
                    delete(MessageRow).where(MessageRow.conversation_id == conversation_id)
                )

    async def list_tenant(
        self, tenant_id: str, *, user_id: str | None, include_deleted: bool, limit: int
    ) -> list[ConversationRecord]:
        query = select(ConversationRow).where(ConversationRow.tenant_id == tenant_id)
        if user_id is not None:
            query = query.where(ConversationRow.user_id == user_id)
        if not include_deleted:
            query = query.where(ConversationRow.deleted_at.is_(None))
        query = query.order_by(ConversationRow.updated_at.desc(), ConversationRow.id.desc()).limit(
            limit
        )
        with _sql_available():
            async with self._sessions() as session:
                return [_record(row) for row in await session.scalars(query)]

    @staticmethod
    def _response_owned(
        tenant_id: str, user_id: str, response_id: str
    ) -> tuple[ColumnElement[bool], ...]:
        return (
            ResponseRow.id == response_id,
            ResponseRow.tenant_id == tenant_id,
            ResponseRow.user_id == user_id,
            ResponseRow.expires_at > time.time(),
        )

    async def put_response(self, record: ResponseRecord) -> None:
        with _sql_available():
            async with self._sessions.begin() as session:
                # Expired responses go as new ones come (the index makes it cheap).
                await session.execute(
                    delete(ResponseRow).where(ResponseRow.expires_at <= time.time())
                )
                if await session.get(ResponseRow, record.id) is not None:
                    raise AlreadyExists(f"response {record.id!r} already exists")
                session.add(ResponseRow(**asdict(record)))

    async def get_response(self, tenant_id: str, user_id: str, response_id: str) -> ResponseRecord:
        with _sql_available():
            async with self._sessions() as session:
                row = await session.scalar(
                    select(ResponseRow).where(
                        *self._response_owned(tenant_id, user_id, response_id)
                    )
                )
        if row is None:
            raise _response_not_found(response_id)
        return _response_record(row)

    async def delete_response(self, tenant_id: str, user_id: str, response_id: str) -> None:
        with _sql_available():
            async with self._sessions.begin() as session:
                deleted = await session.execute(
                    delete(ResponseRow).where(
                        *self._response_owned(tenant_id, user_id, response_id)
                    )
                )
        if deleted.rowcount == 0:  # type: ignore[attr-defined]
            raise _response_not_found(response_id)


# Redis


def _redis_unavailable(error: redis_asyncio.RedisError) -> Unavailable:
    return Unavailable(f"conversation store unavailable: {type(error).__name__}")


class RedisConversationStore(ConversationStore):
    """Conversations in Redis (shared by every router replica)."""

    # Hashes fetched per round trip while an admin listing filters by owner or deletion.
    _PAGE = 100

    def __init__(self, url: str, prefix: str = "aimesh:conv:") -> None:
        self._client = redis_asyncio.Redis.from_url(url, decode_responses=True)
        self._prefix = prefix

    def _key(self, conversation_id: str) -> str:
        return f"{self._prefix}{conversation_id}"

    def _owner_key(self, tenant_id: str, user_id: str) -> str:
        owner = hashlib.sha256(f"{tenant_id}\0{user_id}".encode()).hexdigest()[:32]
        return f"{self._prefix}owner:{owner}"

    def _tenant_key(self, tenant_id: str) -> str:
        tenant = hashlib.sha256(tenant_id.encode()).hexdigest()[:32]
        return f"{self._prefix}tenant:{tenant}"

    async def _insert(self, record: ConversationRecord) -> None:
        mapping: dict[str | bytes, str | bytes | int | float] = {
            "tenant_id": record.tenant_id,
            "user_id": record.user_id,
            "model": record.model,
            "collection": record.collection,
            "title": record.title,
            "created_at": repr(record.created_at),
            "updated_at": repr(record.updated_at),
            "message_count": 0,
        }
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._key(record.id), mapping=mapping)  # type: ignore[arg-type]
                pipe.zadd(
                    self._owner_key(record.tenant_id, record.user_id),
                    {record.id: record.created_at},
                )
                pipe.zadd(self._tenant_key(record.tenant_id), {record.id: record.updated_at})
                await pipe.execute()
        except redis_asyncio.RedisError as error:
            raise _redis_unavailable(error) from None

    async def _owned(self, tenant_id: str, user_id: str, conversation_id: str) -> dict[str, str]:
        try:
            stored = await self._client.hgetall(self._key(conversation_id))
        except redis_asyncio.RedisError as error:
            raise _redis_unavailable(error) from None
        fields = {str(key): str(value) for key, value in stored.items()}
        if (
            fields.get("tenant_id") != tenant_id
            or fields.get("user_id") != user_id
            or fields.get("deleted_at")
        ):
            raise _not_found(conversation_id)
        return fields

    @staticmethod
    def _record(conversation_id: str, fields: dict[str, str], count: int) -> ConversationRecord:
        """``count``: the length of the message list (for conversations stored before the
        hash kept a count, and while it exists)."""
        created_at = float(fields["created_at"])
        deleted_at = fields.get("deleted_at")
        return ConversationRecord(
            id=conversation_id,
            tenant_id=fields["tenant_id"],
            user_id=fields["user_id"],
            model=fields["model"],
            collection=fields["collection"],
            title=fields["title"],
            created_at=created_at,
            message_count=int(fields["message_count"]) if deleted_at else count,
            updated_at=float(fields.get("updated_at", created_at)),
            deleted_at=float(deleted_at) if deleted_at else None,
        )

    async def get(self, tenant_id: str, user_id: str, conversation_id: str) -> ConversationRecord:
        fields = await self._owned(tenant_id, user_id, conversation_id)
        try:
            raw = await self._client.lrange(f"{self._key(conversation_id)}:messages", 0, -1)
        except redis_asyncio.RedisError as error:
            raise _redis_unavailable(error) from None
        record = self._record(conversation_id, fields, len(raw))
        record.messages = [StoredMessage(**json.loads(item)) for item in raw]
        return record

    async def list_owned(
        self, tenant_id: str, user_id: str, limit: int
    ) -> list[ConversationRecord]:
        try:
            newest = await self._client.zrevrange(self._owner_key(tenant_id, user_id), 0, limit - 1)
            ids = [str(conversation_id) for conversation_id in newest]
            found = await self._fetch(ids)
        except redis_asyncio.RedisError as error:
            raise _redis_unavailable(error) from None
        # The owner is checked on the record too, not only by the index it came from.
        return [
            record
            for record in found
            if record.tenant_id == tenant_id
            and record.user_id == user_id
            and record.deleted_at is None
        ]

    async def _fetch(self, ids: list[str]) -> list[ConversationRecord]:
        """The records of ``ids`` (those that exist), in order, without messages."""
        async with self._client.pipeline(transaction=False) as pipe:
            for conversation_id in ids:
                pipe.hgetall(self._key(conversation_id))
                pipe.llen(f"{self._key(conversation_id)}:messages")
            replies = await pipe.execute()
        found: list[ConversationRecord] = []
        for index, conversation_id in enumerate(ids):
            fields, count = replies[2 * index], replies[2 * index + 1]
            if fields.get("tenant_id") is None:
                continue
            found.append(self._record(conversation_id, fields, int(count)))
        return found

    async def delete(self, tenant_id: str, user_id: str, conversation_id: str) -> None:
        await self._owned(tenant_id, user_id, conversation_id)
        key = self._key(conversation_id)
        try:
            count = await self._client.llen(f"{key}:messages")
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(
                    key,
                    mapping={"deleted_at": repr(time.time()), "message_count": int(count)},
                )
                pipe.delete(f"{key}:messages")
                pipe.zrem(self._owner_key(tenant_id, user_id), conversation_id)
                await pipe.execute()
        except redis_asyncio.RedisError as error:
            raise _redis_unavailable(error) from None

    async def append(
        self, tenant_id: str, user_id: str, conversation_id: str, messages: list[StoredMessage]
    ) -> None:
        await self._owned(tenant_id, user_id, conversation_id)
        items = [json.dumps({"role": m.role, "content": m.content}) for m in messages]
        now = time.time()
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.rpush(f"{self._key(conversation_id)}:messages", *items)
                pipe.hincrby(self._key(conversation_id), "message_count", len(items))
                pipe.hset(self._key(conversation_id), "updated_at", repr(now))
                pipe.zadd(self._tenant_key(tenant_id), {conversation_id: now})
                await pipe.execute()
        except redis_asyncio.RedisError as error:
            raise _redis_unavailable(error) from None

    async def list_tenant(
        self, tenant_id: str, *, user_id: str | None, include_deleted: bool, limit: int
    ) -> list[ConversationRecord]:
        found: list[ConversationRecord] = []
        start = 0
        try:
            while len(found) < limit:
                # Ties in last activity: the greater id first, as in SQL.
                page = await self._client.zrevrange(
                    self._tenant_key(tenant_id), start, start + self._PAGE - 1
                )
                if not page:
                    break
                start += len(page)
                for record in await self._fetch([str(item) for item in page]):
                    if (
                        record.tenant_id == tenant_id
                        and (user_id is None or record.user_id == user_id)
                        and (include_deleted or record.deleted_at is None)
                    ):
                        found.append(record)
        except redis_asyncio.RedisError as error:
            raise _redis_unavailable(error) from None
        return found[:limit]

    def _response_key(self, response_id: str) -> str:
        return f"{self._prefix}resp:{response_id}"

    async def put_response(self, record: ResponseRecord) -> None:
        ttl_ms = max(1, int((record.expires_at - time.time()) * 1000))
        try:
            stored = await self._client.set(
                self._response_key(record.id), json.dumps(asdict(record)), nx=True, px=ttl_ms
            )
        except redis_asyncio.RedisError as error:
            raise _redis_unavailable(error) from None
        if not stored:
            raise AlreadyExists(f"response {record.id!r} already exists")

    async def get_response(self, tenant_id: str, user_id: str, response_id: str) -> ResponseRecord:
        try:
            raw = await self._client.get(self._response_key(response_id))
        except redis_asyncio.RedisError as error:
            raise _redis_unavailable(error) from None
        if raw is None:
            raise _response_not_found(response_id)
        record = ResponseRecord(**json.loads(raw))
        if (
            record.tenant_id != tenant_id
            or record.user_id != user_id
            or record.expires_at <= time.time()
        ):
            raise _response_not_found(response_id)
        return record

    async def delete_response(self, tenant_id: str, user_id: str, response_id: str) -> None:
        await self.get_response(tenant_id, user_id, response_id)
        try:
            await self._client.delete(self._response_key(response_id))
        except redis_asyncio.RedisError as error:
            raise _redis_unavailable(error) from None

    async def aclose(self) -> None:
        await self._client.aclose()
