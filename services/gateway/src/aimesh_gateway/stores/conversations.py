"""Conversation metadata for the tenant's admins: who started which conversation, with what
settings, how long it is and when it was last used. Never the messages: the LLM router keeps
those, and the gateway stores nothing of a conversation beyond the title the router reports.

The conversation routes report what happened (:meth:`ConversationLog.started`,
:meth:`~ConversationLog.seen`, :meth:`~ConversationLog.turn`,
:meth:`~ConversationLog.deleted`); each becomes one write off the request path, like usage
records: a database failure is logged and never fails the user's request, and the writes
still pending are awaited at shutdown (:meth:`~ConversationLog.drain`).

Every write is a single statement that does not depend on the others' order, so writes
that race (several workers, a turn reported before the creation was written) converge:

* started/seen: insert the row, or set the settings the router reported on the existing row
  and raise its message count to the reported one (a count never goes down);
* turn: add the turn's messages and move the last activity forward; a conversation not yet
  known (started before the gateway recorded conversations) gets a row with what is known;
* deleted: mark the row deleted (once; the row stays for the admins).
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, SQLColumnExpression, case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.auth.security import Principal
from aimesh_gateway.core.background import Background
from aimesh_gateway.db.models import ConversationRecord, utcnow

log = logging.getLogger("aimesh.gateway.conversations")

T = TypeVar("T")

# A completed turn stores two messages: the user's and the reply (the router appends both
# once the reply is complete, before it reports usage and done).
TURN_MESSAGES = 2
TITLE_CHARS = 200  # the column's width (and the router's limit on titles)


@dataclass(frozen=True)
class ConversationInfo:
    """A conversation as the router reported it (its metadata only)."""

    id: str
    model: str
    collection: str | None
    title: str
    created_at: datetime
    message_count: int

    @classmethod
    def from_router(cls, reply: llm_pb2.Conversation) -> ConversationInfo:
        """From the router's reply: an empty collection is none, times are Unix seconds."""
        return cls(
            id=reply.id,
            model=reply.model,
            collection=reply.collection or None,
            title=reply.title[:TITLE_CHARS],
            created_at=datetime.fromtimestamp(reply.created_at, UTC),
            message_count=max(reply.message_count, len(reply.messages)),
        )


def _greatest(
    current: SQLColumnExpression[T], candidate: SQLColumnExpression[T]
) -> ColumnElement[T]:
    """The greater of two values (GREATEST on PostgreSQL, max() on SQLite: spelt portably)."""
    return case((current < candidate, candidate), else_=current)


def _upsert(session: AsyncSession) -> Any:
    """The INSERT ... ON CONFLICT construct of the session's database."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(ConversationRecord)
    if dialect == "sqlite":
        return sqlite.insert(ConversationRecord)
    raise NotImplementedError(f"conversation metadata on {dialect!r}: use SQLite or PostgreSQL")


class ConversationLog:
    """Writes and reads the ``conversations`` table (see the module docstring)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._writes = Background()

    # Writes (scheduled; they never raise to the caller)

    def started(self, principal: Principal, info: ConversationInfo) -> None:
        """The principal started the conversation."""
        self._spawn(self._observe(principal, info))

    def seen(self, principal: Principal, info: ConversationInfo) -> None:
        """The principal read the conversation: its settings and size as the router has them.

        Fills in conversations started before the gateway recorded them, and repairs a count
        that missed a turn (a client that left after the reply was stored)."""
        self._spawn(self._observe(principal, info))

    def turn(self, principal: Principal, conversation_id: str, model: str) -> None:
        """A turn of the conversation completed (``model``: the alias that answered)."""
        self._spawn(self._turn(principal, conversation_id, model, utcnow()))

    def deleted(self, principal: Principal, conversation_id: str) -> None:
        """The principal deleted the conversation."""
        self._spawn(self._deleted(principal, conversation_id, utcnow()))

    async def drain(self) -> None:
        """Wait for the writes still pending (at shutdown, and before a listing)."""
        await self._writes.drain()

    def _spawn(self, write: Coroutine[Any, Any, None]) -> None:
        self._writes.spawn(self._guarded(write))

    @staticmethod
    async def _guarded(write: Coroutine[Any, Any, None]) -> None:
        try:
            await write
        except (SQLAlchemyError, OSError, NotImplementedError) as error:
            log.warning("could not store conversation metadata: %s", type(error).__name__)

    async def _observe(self, principal: Principal, info: ConversationInfo) -> None:
        async with self.sessions.begin() as session:
            insert = _upsert(session).values(
                id=info.id,
                tenant_id=principal.tenant_id,
                subject=principal.subject,
                model=info.model,
                collection=info.collection,
                title=info.title,
                created_at=info.created_at,
                updated_at=info.created_at,
                message_count=info.message_count,
                deleted_at=None,
            )
            new = insert.excluded
            await session.execute(
                insert.on_conflict_do_update(
                    index_elements=["id"],
                    set_={
                        "model": new.model,
                        "collection": new.collection,
                        "title": new.title,
                        "created_at": new.created_at,
                        "message_count": _greatest(
                            ConversationRecord.message_count, new.message_count
                        ),
                    },
                    # Ids are the router's random ids; a row of another tenant is never touched.
                    where=ConversationRecord.tenant_id == new.tenant_id,
                )
            )

    async def _turn(
        self, principal: Principal, conversation_id: str, model: str, at: datetime
    ) -> None:
        async with self.sessions.begin() as session:
            insert = _upsert(session).values(
                id=conversation_id,
                tenant_id=principal.tenant_id,
                subject=principal.subject,
                model=model,
                collection=None,
                title="",
                created_at=at,
                updated_at=at,
                message_count=TURN_MESSAGES,
                deleted_at=None,
            )
            new = insert.excluded
            await session.execute(
                insert.on_conflict_do_update(
                    index_elements=["id"],
                    set_={
                        "message_count": ConversationRecord.message_count + new.message_count,
                        "updated_at": _greatest(ConversationRecord.updated_at, new.updated_at),
                    },
                    where=ConversationRecord.tenant_id == new.tenant_id,
                )
            )

    async def _deleted(self, principal: Principal, conversation_id: str, at: datetime) -> None:
        # No row for an unknown conversation: nothing of it (creation, settings) is known.
        async with self.sessions.begin() as session:
            await session.execute(
                update(ConversationRecord)
                .where(
                    ConversationRecord.id == conversation_id,
                    ConversationRecord.tenant_id == principal.tenant_id,
                    ConversationRecord.deleted_at.is_(None),
                )
                .values(deleted_at=at)
            )

    # Reads

    async def recent(
        self,
        tenant_id: str,
        *,
        subject: str | None = None,
        include_deleted: bool = False,
        limit: int = 100,
    ) -> list[ConversationRecord]:
        """The tenant's conversations, most recently active first."""
        query = select(ConversationRecord).where(ConversationRecord.tenant_id == tenant_id)
        if subject is not None:
            query = query.where(ConversationRecord.subject == subject)
        if not include_deleted:
            query = query.where(ConversationRecord.deleted_at.is_(None))
        query = query.order_by(
            ConversationRecord.updated_at.desc(), ConversationRecord.id.desc()
        ).limit(limit)
        async with self.sessions() as session:
            return list((await session.scalars(query)).all())
