"""Files uploaded with OpenAI's files API, per tenant, bytes included (SQL).

The bytes live in their own table, read only by :meth:`FileStore.content`, so listings and
lookups never load them. A file is at most the upload limit of one file (``MAX_FILE_BYTES``
of the upload route) and a tenant's files together at most ``max_tenant_bytes``
(``AIMESH_FILES_MAX_TENANT_BYTES``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Select, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from aimesh_gateway.db.models import FileContent, StoredFile, utcnow

Order = Literal["asc", "desc"]
T = TypeVar("T")


class TenantQuotaExceeded(Exception):
    """The tenant's files would pass ``max_tenant_bytes`` together."""

    def __init__(self, stored: int, limit: int) -> None:
        super().__init__(f"the tenant's files hold {stored} bytes; at most {limit} are allowed")
        self.stored = stored
        self.limit = limit


class UnknownCursor(LookupError):
    """An ``after`` / ``before`` id that names nothing in the listed set."""


def keyset_page(
    query: Select[Any],
    created: InstrumentedAttribute[datetime],
    key: InstrumentedAttribute[str],
    *,
    order: Order,
    after: tuple[datetime, str] | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> tuple[Select[Any], bool]:
    """``query`` narrowed to one page of OpenAI's cursor lists, ordered by (created, key):
    the rows after ``after`` or, for the previous page, the ``limit`` rows just before
    ``before`` (all in list order). One row more than ``limit`` is selected, to tell whether
    there are more; the bool says the rows come in reverse (a ``before`` page) and must be
    turned around by :func:`page_rows`."""

    def later(anchor: tuple[datetime, str]) -> Any:
        return or_(created > anchor[0], and_(created == anchor[0], key > anchor[1]))

    def earlier(anchor: tuple[datetime, str]) -> Any:
        return or_(created < anchor[0], and_(created == anchor[0], key < anchor[1]))

    ascending = order == "asc"
    if after is not None:
        query = query.where(later(after) if ascending else earlier(after))
    if before is not None:
        query = query.where(earlier(before) if ascending else later(before))
    # A previous page (before, no after) is read backwards from the cursor.
    backwards = before is not None and after is None
    if ascending != backwards:
        query = query.order_by(created.asc(), key.asc())
    else:
        query = query.order_by(created.desc(), key.desc())
    return query.limit(limit + 1), backwards


def page_rows(rows: list[T], limit: int, backwards: bool) -> tuple[list[T], bool]:
    """The page of :func:`keyset_page`'s rows in list order, and whether more follow."""
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    return rows, more


class FileStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], max_tenant_bytes: int) -> None:
        self.sessions = sessions
        self.max_tenant_bytes = max_tenant_bytes

    async def add(self, tenant_id: str, filename: str, purpose: str, content: bytes) -> StoredFile:
        """Store a file; :class:`TenantQuotaExceeded` when the tenant's files would pass the
        limit. (Two uploads at once may both pass a check made before either commits: the
        limit bounds storage, it is not an exact quota.)"""
        async with self.sessions() as session, session.begin():
            stored = await session.scalar(
                select(func.coalesce(func.sum(StoredFile.bytes), 0)).where(
                    StoredFile.tenant_id == tenant_id
                )
            )
            if int(stored or 0) + len(content) > self.max_tenant_bytes:
                raise TenantQuotaExceeded(int(stored or 0), self.max_tenant_bytes)
            row = StoredFile(
                id=f"file-{uuid.uuid4().hex}",
                tenant_id=tenant_id,
                filename=filename,
                purpose=purpose,
                bytes=len(content),
                created_at=utcnow(),
            )
            session.add(row)
            await session.flush()
            session.add(FileContent(file_id=row.id, content=content))
        return row

    async def get(self, tenant_id: str, file_id: str) -> StoredFile | None:
        async with self.sessions() as session:
            return await session.scalar(
                select(StoredFile).where(
                    StoredFile.id == file_id, StoredFile.tenant_id == tenant_id
                )
            )

    async def content(self, tenant_id: str, file_id: str) -> bytes | None:
        """The file's bytes (None when the tenant has no such file)."""
        async with self.sessions() as session:
            content: bytes | None = await session.scalar(
                select(FileContent.content)
                .join(StoredFile, StoredFile.id == FileContent.file_id)
                .where(StoredFile.id == file_id, StoredFile.tenant_id == tenant_id)
            )
            return content

    async def page(
        self,
        tenant_id: str,
        *,
        purpose: str | None,
        order: Order,
        after: str | None,
        before: str | None,
        limit: int,
    ) -> tuple[list[StoredFile], bool]:
        """One page of the tenant's files and whether more follow; :class:`UnknownCursor`
        when ``after`` or ``before`` names no file of the tenant."""
        async with self.sessions() as session:
            anchors = []
            for cursor in (after, before):
                anchor = None
                if cursor is not None:
                    found = await session.get(StoredFile, cursor)
                    if found is None or found.tenant_id != tenant_id:
                        raise UnknownCursor(cursor)
                    anchor = (found.created_at, found.id)
                anchors.append(anchor)
            query = select(StoredFile).where(StoredFile.tenant_id == tenant_id)
            if purpose is not None:
                query = query.where(StoredFile.purpose == purpose)
            query, backwards = keyset_page(
                query,
                StoredFile.created_at,
                StoredFile.id,
                order=order,
                after=anchors[0],
                before=anchors[1],
                limit=limit,
            )
            rows = list((await session.scalars(query)).all())
        return page_rows(rows, limit, backwards)

    async def delete(self, tenant_id: str, file_id: str) -> bool:
        """Delete the file and its bytes; False when the tenant has no such file."""
        async with self.sessions() as session, session.begin():
            row = await session.scalar(
                select(StoredFile).where(
                    StoredFile.id == file_id, StoredFile.tenant_id == tenant_id
                )
            )
            if row is None:
                return False
            await session.execute(delete(FileContent).where(FileContent.file_id == file_id))
            await session.execute(delete(StoredFile).where(StoredFile.id == file_id))
        return True
