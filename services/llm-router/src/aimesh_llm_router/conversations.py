"""Conversations kept server-side: Redis when ``AIMESH_REDIS_URL`` is set, else SQLite.

A conversation belongs to one user of one tenant. Every read and write names the owner,
and a conversation of another owner is reported exactly like a missing one (NOT_FOUND),
so ids cannot be probed across users or tenants. Messages are only ``user`` and
``assistant`` turns; the router's system prompt is never stored or shown.

Redis layout (``<prefix>`` defaults to ``aimesh:conv:``): a hash ``<prefix><id>`` with
the owner and settings, a list ``<prefix><id>:messages`` of JSON messages, and per owner a
sorted set ``<prefix>owner:<hash of tenant and user>`` of their conversation ids by
creation time (for listing).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiosqlite
import redis.asyncio as redis_asyncio

from aimesh_common.errors import NotFound, Unavailable

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
    # How many messages there are (set also by listings, which leave messages out).
    message_count: int = 0


def _not_found(conversation_id: str) -> NotFound:
    return NotFound(f"conversation {conversation_id!r} does not exist")


class ConversationStore(ABC):
    """Where conversations live; every method checks the owner."""

    async def create(
        self, tenant_id: str, user_id: str, model: str, collection: str, title: str
    ) -> ConversationRecord:
        record = ConversationRecord(
            id=uuid.uuid4().hex,
            tenant_id=tenant_id,
            user_id=user_id,
            model=model,
            collection=collection,
            title=title,
            created_at=time.time(),
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
        """Add messages at the end (owner checked)."""

    @abstractmethod
    async def list_owned(
        self, tenant_id: str, user_id: str, limit: int
    ) -> list[ConversationRecord]:
        """This owner's newest ``limit`` conversations, newest first, without messages."""

    @abstractmethod
    async def delete(self, tenant_id: str, user_id: str, conversation_id: str) -> None:
        """Remove a conversation and its messages (owner checked)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class SqliteConversationStore(ConversationStore):
    """Conversations in a SQLite file (one connection per call: simple and safe)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as db:
            db.executescript(
                """
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
            )

    async def _insert(self, record: ConversationRecord) -> None:
        async with aiosqlite.connect(self._path) as db:
            await db.execute(
                "INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.tenant_id,
                    record.user_id,
                    record.model,
                    record.collection,
                    record.title,
                    record.created_at,
                ),
            )
            await db.commit()

    async def get(self, tenant_id: str, user_id: str, conversation_id: str) -> ConversationRecord:
        async with aiosqlite.connect(self._path) as db:
            cursor = await db.execute(
                "SELECT model, collection, title, created_at FROM conversations "
                "WHERE id = ? AND tenant_id = ? AND user_id = ?",
                (conversation_id, tenant_id, user_id),
            )
            row = await cursor.fetchone()
            if row is None:
                raise _not_found(conversation_id)
            cursor = await db.execute(
                "SELECT role, content FROM conversation_messages WHERE conversation_id = ? "
                "ORDER BY position",
                (conversation_id,),
            )
            messages = [StoredMessage(role, content) for role, content in await cursor.fetchall()]
        return ConversationRecord(
            id=conversation_id,
            tenant_id=tenant_id,
            user_id=user_id,
            model=row[0],
            collection=row[1],
            title=row[2],
            created_at=row[3],
            messages=messages,
            message_count=len(messages),
        )

    async def list_owned(
        self, tenant_id: str, user_id: str, limit: int
    ) -> list[ConversationRecord]:
        async with aiosqlite.connect(self._path) as db:
            cursor = await db.execute(
                "SELECT id, model, collection, title, created_at, (SELECT COUNT(*) FROM "
                "conversation_messages WHERE conversation_id = conversations.id) "
                "FROM conversations WHERE tenant_id = ? AND user_id = ? "
                "ORDER BY created_at DESC, id LIMIT ?",
                (tenant_id, user_id, limit),
            )
            rows = await cursor.fetchall()
        return [
            ConversationRecord(
                id=row[0],
                tenant_id=tenant_id,
                user_id=user_id,
                model=row[1],
                collection=row[2],
                title=row[3],
                created_at=row[4],
                message_count=int(row[5]),
            )
            for row in rows
        ]

    async def delete(self, tenant_id: str, user_id: str, conversation_id: str) -> None:
        async with aiosqlite.connect(self._path) as db:
            cursor = await db.execute(
                "DELETE FROM conversations WHERE id = ? AND tenant_id = ? AND user_id = ?",
                (conversation_id, tenant_id, user_id),
            )
            if cursor.rowcount == 0:
                raise _not_found(conversation_id)
            await db.execute(
                "DELETE FROM conversation_messages WHERE conversation_id = ?", (conversation_id,)
            )
            await db.commit()

    async def append(
        self, tenant_id: str, user_id: str, conversation_id: str, messages: list[StoredMessage]
    ) -> None:
        async with aiosqlite.connect(self._path) as db:
            cursor = await db.execute(
                "SELECT (SELECT COUNT(*) FROM conversation_messages WHERE conversation_id = ?) "
                "FROM conversations WHERE id = ? AND tenant_id = ? AND user_id = ?",
                (conversation_id, conversation_id, tenant_id, user_id),
            )
            row = await cursor.fetchone()
            if row is None:
                raise _not_found(conversation_id)
            start = int(row[0])
            await db.executemany(
                "INSERT INTO conversation_messages VALUES (?, ?, ?, ?)",
                [
                    (conversation_id, start + offset, message.role, message.content)
                    for offset, message in enumerate(messages)
                ],
            )
            await db.commit()


class RedisConversationStore(ConversationStore):
    """Conversations in Redis (shared by every router replica)."""

    def __init__(self, url: str, prefix: str = "aimesh:conv:") -> None:
        self._client = redis_asyncio.Redis.from_url(url, decode_responses=True)
        self._prefix = prefix

    def _key(self, conversation_id: str) -> str:
        return f"{self._prefix}{conversation_id}"

    def _owner_key(self, tenant_id: str, user_id: str) -> str:
        owner = hashlib.sha256(f"{tenant_id}\0{user_id}".encode()).hexdigest()[:32]
        return f"{self._prefix}owner:{owner}"

    async def _insert(self, record: ConversationRecord) -> None:
        mapping: dict[str | bytes, str | bytes | int | float] = {
            "tenant_id": record.tenant_id,
            "user_id": record.user_id,
            "model": record.model,
            "collection": record.collection,
            "title": record.title,
            "created_at": repr(record.created_at),
        }
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._key(record.id), mapping=mapping)  # type: ignore[arg-type]
                pipe.zadd(
                    self._owner_key(record.tenant_id, record.user_id),
                    {record.id: record.created_at},
                )
                await pipe.execute()
        except redis_asyncio.RedisError as error:
            raise Unavailable(f"conversation store unavailable: {type(error).__name__}") from None

    async def _owned(self, tenant_id: str, user_id: str, conversation_id: str) -> dict[str, str]:
        try:
            stored = await self._client.hgetall(self._key(conversation_id))
        except redis_asyncio.RedisError as error:
            raise Unavailable(f"conversation store unavailable: {type(error).__name__}") from None
        fields = {str(key): str(value) for key, value in stored.items()}
        if fields.get("tenant_id") != tenant_id or fields.get("user_id") != user_id:
            raise _not_found(conversation_id)
        return fields

    async def get(self, tenant_id: str, user_id: str, conversation_id: str) -> ConversationRecord:
        fields = await self._owned(tenant_id, user_id, conversation_id)
        try:
            raw = await self._client.lrange(f"{self._key(conversation_id)}:messages", 0, -1)
        except redis_asyncio.RedisError as error:
            raise Unavailable(f"conversation store unavailable: {type(error).__name__}") from None
        messages = [StoredMessage(**json.loads(item)) for item in raw]
        return ConversationRecord(
            id=conversation_id,
            tenant_id=tenant_id,
            user_id=user_id,
            model=fields["model"],
            collection=fields["collection"],
            title=fields["title"],
            created_at=float(fields["created_at"]),
            messages=messages,
            message_count=len(messages),
        )

    async def list_owned(
        self, tenant_id: str, user_id: str, limit: int
    ) -> list[ConversationRecord]:
        try:
            newest = await self._client.zrevrange(self._owner_key(tenant_id, user_id), 0, limit - 1)
            ids = [str(conversation_id) for conversation_id in newest]
            async with self._client.pipeline(transaction=False) as pipe:
                for conversation_id in ids:
                    pipe.hgetall(self._key(conversation_id))
                    pipe.llen(f"{self._key(conversation_id)}:messages")
                replies = await pipe.execute()
        except redis_asyncio.RedisError as error:
            raise Unavailable(f"conversation store unavailable: {type(error).__name__}") from None
        found: list[ConversationRecord] = []
        for index, conversation_id in enumerate(ids):
            fields, count = replies[2 * index], replies[2 * index + 1]
            # The owner is checked on the record too, not only by the index it came from.
            if fields.get("tenant_id") != tenant_id or fields.get("user_id") != user_id:
                continue
            found.append(
                ConversationRecord(
                    id=conversation_id,
                    tenant_id=tenant_id,
                    user_id=user_id,
                    model=fields["model"],
                    collection=fields["collection"],
                    title=fields["title"],
                    created_at=float(fields["created_at"]),
                    message_count=int(count),
                )
            )
        return found

    async def delete(self, tenant_id: str, user_id: str, conversation_id: str) -> None:
        await self._owned(tenant_id, user_id, conversation_id)
        key = self._key(conversation_id)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(key, f"{key}:messages")
                pipe.zrem(self._owner_key(tenant_id, user_id), conversation_id)
                await pipe.execute()
        except redis_asyncio.RedisError as error:
            raise Unavailable(f"conversation store unavailable: {type(error).__name__}") from None

    async def append(
        self, tenant_id: str, user_id: str, conversation_id: str, messages: list[StoredMessage]
    ) -> None:
        await self._owned(tenant_id, user_id, conversation_id)
        items = [json.dumps({"role": m.role, "content": m.content}) for m in messages]
        try:
            await self._client.rpush(f"{self._key(conversation_id)}:messages", *items)
        except redis_asyncio.RedisError as error:
            raise Unavailable(f"conversation store unavailable: {type(error).__name__}") from None

    async def aclose(self) -> None:
        await self._client.aclose()
