"""What OpenAI's vector-store API keeps beside aimesh's collections (SQL).

The retrieval service owns a collection (its documents, its settings, whether it exists);
the gateway keeps only what the vector-store API adds: a vector store's display name,
description and metadata, and the files added to it, each with the ingestion job that
stores its documents and the job's last known outcome. A collection without a row here is
still a vector store (its name is its id); rows of a collection that no longer exists are
never shown, and go when the collection is deleted through the gateway.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aimesh_gateway.db.models import VectorStore, VectorStoreFile, utcnow
from aimesh_gateway.stores.files import Order, UnknownCursor, keyset_page, page_rows

FILE_STATUSES = ("in_progress", "completed", "failed", "cancelled")


@dataclass(frozen=True)
class Outcome:
    """A vector-store file's status, with OpenAI's ``last_error`` when it failed."""

    status: str
    error_code: str = ""
    error_message: str = ""


def metadata_of(row: VectorStore | None) -> dict[str, str]:
    if row is None:
        return {}
    value: dict[str, str] = json.loads(row.metadata_json)
    return value


def attributes_of(row: VectorStoreFile) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(row.attributes_json)
    return value


def document_ids_of(row: VectorStoreFile) -> list[str]:
    value: list[str] = json.loads(row.document_ids_json)
    return value


class VectorStoreRecords:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    # ------------------------------------------------------------ vector stores

    async def create(
        self,
        tenant_id: str,
        vector_store_id: str,
        *,
        name: str,
        description: str,
        metadata: dict[str, str],
    ) -> VectorStore:
        """The row of a collection just created for a new vector store (a row left over
        from an earlier collection of that name is replaced)."""
        async with self.sessions() as session, session.begin():
            await self._forget(session, tenant_id, vector_store_id)
            row = VectorStore(
                tenant_id=tenant_id,
                id=vector_store_id,
                name=name,
                description=description,
                metadata_json=json.dumps(metadata),
                created_at=utcnow(),
            )
            session.add(row)
        return row

    async def of(self, tenant_id: str, vector_store_ids: Iterable[str]) -> dict[str, VectorStore]:
        """The rows of these vector stores (collections without one are absent)."""
        wanted = list(vector_store_ids)
        if not wanted:
            return {}
        async with self.sessions() as session:
            rows = await session.scalars(
                select(VectorStore).where(
                    VectorStore.tenant_id == tenant_id, VectorStore.id.in_(wanted)
                )
            )
            return {row.id: row for row in rows}

    async def update(
        self,
        tenant_id: str,
        vector_store_id: str,
        *,
        name: str | None,
        metadata: dict[str, str] | None,
    ) -> VectorStore:
        """Change the name or metadata (a collection without a row gets one; its
        ``created_at`` is then this moment)."""
        async with self.sessions() as session, session.begin():
            row = await session.get(VectorStore, (tenant_id, vector_store_id))
            if row is None:
                row = VectorStore(
                    tenant_id=tenant_id,
                    id=vector_store_id,
                    name=vector_store_id,
                    description="",
                    metadata_json="{}",
                    created_at=utcnow(),
                )
                session.add(row)
            if name is not None:
                row.name = name
            if metadata is not None:
                row.metadata_json = json.dumps(metadata)
        return row

    async def forget(self, tenant_id: str, vector_store_id: str) -> None:
        """Drop everything kept for a collection that was deleted."""
        async with self.sessions() as session, session.begin():
            await self._forget(session, tenant_id, vector_store_id)

    @staticmethod
    async def _forget(session: AsyncSession, tenant_id: str, vector_store_id: str) -> None:
        await session.execute(
            delete(VectorStoreFile).where(
                VectorStoreFile.tenant_id == tenant_id,
                VectorStoreFile.vector_store_id == vector_store_id,
            )
        )
        await session.execute(
            delete(VectorStore).where(
                VectorStore.tenant_id == tenant_id, VectorStore.id == vector_store_id
            )
        )

    # ------------------------------------------------------------ their files

    async def attach(
        self,
        tenant_id: str,
        vector_store_id: str,
        file_id: str,
        *,
        job_id: str,
        outcome: Outcome,
        usage_bytes: int,
        attributes: dict[str, Any],
        document_ids: Sequence[str],
        batch_id: str = "",
    ) -> VectorStoreFile:
        """Record a file added to a vector store (replacing an earlier attempt)."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                delete(VectorStoreFile).where(
                    VectorStoreFile.tenant_id == tenant_id,
                    VectorStoreFile.vector_store_id == vector_store_id,
                    VectorStoreFile.file_id == file_id,
                )
            )
            row = VectorStoreFile(
                tenant_id=tenant_id,
                vector_store_id=vector_store_id,
                file_id=file_id,
                job_id=job_id,
                batch_id=batch_id,
                status=outcome.status,
                error_code=outcome.error_code,
                error_message=outcome.error_message,
                usage_bytes=usage_bytes,
                attributes_json=json.dumps(attributes),
                document_ids_json=json.dumps(list(document_ids)),
                created_at=utcnow(),
            )
            session.add(row)
        return row

    async def file(
        self, tenant_id: str, vector_store_id: str, file_id: str
    ) -> VectorStoreFile | None:
        async with self.sessions() as session:
            return await session.get(VectorStoreFile, (tenant_id, vector_store_id, file_id))

    async def settle(self, row: VectorStoreFile, outcome: Outcome) -> None:
        """Record the job's outcome on ``row`` (and in the database)."""
        async with self.sessions() as session, session.begin():
            stored = await session.get(
                VectorStoreFile, (row.tenant_id, row.vector_store_id, row.file_id)
            )
            # Only the attempt that was read: a file added again since has its own job.
            if stored is not None and stored.job_id == row.job_id:
                stored.status = outcome.status
                stored.error_code = outcome.error_code
                stored.error_message = outcome.error_message
        row.status = outcome.status
        row.error_code = outcome.error_code
        row.error_message = outcome.error_message

    async def tag(self, row: VectorStoreFile, batch_id: str) -> None:
        """Count ``row`` in the batch ``batch_id`` (a file a batch names that was there)."""
        async with self.sessions() as session, session.begin():
            stored = await session.get(
                VectorStoreFile, (row.tenant_id, row.vector_store_id, row.file_id)
            )
            if stored is not None:
                stored.batch_id = batch_id
        row.batch_id = batch_id

    async def detach(self, tenant_id: str, vector_store_id: str, file_id: str) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                delete(VectorStoreFile).where(
                    VectorStoreFile.tenant_id == tenant_id,
                    VectorStoreFile.vector_store_id == vector_store_id,
                    VectorStoreFile.file_id == file_id,
                )
            )

    async def files_page(
        self,
        tenant_id: str,
        vector_store_id: str,
        *,
        status: str | None,
        batch_id: str | None = None,
        order: Order,
        after: str | None,
        before: str | None,
        limit: int,
    ) -> tuple[list[VectorStoreFile], bool]:
        """One page of a vector store's files and whether more follow (:class:`UnknownCursor`
        when ``after`` or ``before`` names no file of the store)."""
        async with self.sessions() as session:
            anchors = []
            for cursor in (after, before):
                anchor = None
                if cursor is not None:
                    found = await session.get(VectorStoreFile, (tenant_id, vector_store_id, cursor))
                    if found is None:
                        raise UnknownCursor(cursor)
                    anchor = (found.created_at, found.file_id)
                anchors.append(anchor)
            query = select(VectorStoreFile).where(
                VectorStoreFile.tenant_id == tenant_id,
                VectorStoreFile.vector_store_id == vector_store_id,
            )
            if status is not None:
                query = query.where(VectorStoreFile.status == status)
            if batch_id is not None:
                query = query.where(VectorStoreFile.batch_id == batch_id)
            query, backwards = keyset_page(
                query,
                VectorStoreFile.created_at,
                VectorStoreFile.file_id,
                order=order,
                after=anchors[0],
                before=anchors[1],
                limit=limit,
            )
            rows = list((await session.scalars(query)).all())
        return page_rows(rows, limit, backwards)

    async def pending(
        self, tenant_id: str, vector_store_ids: Iterable[str], limit: int
    ) -> list[VectorStoreFile]:
        """Up to ``limit`` files of these stores whose job was last seen in progress."""
        wanted = list(vector_store_ids)
        if not wanted:
            return []
        async with self.sessions() as session:
            rows = await session.scalars(
                select(VectorStoreFile)
                .where(
                    VectorStoreFile.tenant_id == tenant_id,
                    VectorStoreFile.vector_store_id.in_(wanted),
                    VectorStoreFile.status == "in_progress",
                )
                .order_by(VectorStoreFile.created_at)
                .limit(limit)
            )
            return list(rows)

    async def counts(
        self, tenant_id: str, vector_store_ids: Iterable[str]
    ) -> dict[str, tuple[Counter[str], int]]:
        """Per store: its files by status, and their usage bytes together."""
        wanted = list(vector_store_ids)
        found: dict[str, tuple[Counter[str], int]] = {}
        if not wanted:
            return found
        async with self.sessions() as session:
            rows = await session.execute(
                select(
                    VectorStoreFile.vector_store_id,
                    VectorStoreFile.status,
                    func.count(),
                    func.coalesce(func.sum(VectorStoreFile.usage_bytes), 0),
                )
                .where(
                    VectorStoreFile.tenant_id == tenant_id,
                    VectorStoreFile.vector_store_id.in_(wanted),
                )
                .group_by(VectorStoreFile.vector_store_id, VectorStoreFile.status)
            )
            for store_id, status, count, usage in rows:
                statuses, total = found.get(store_id, (Counter(), 0))
                statuses[status] += int(count)
                found[store_id] = (statuses, total + int(usage))
        return found
