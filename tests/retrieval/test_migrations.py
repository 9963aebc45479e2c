"""The job store's migrations on an empty SQLite file and an empty PostgreSQL database, and
on a database made by the store before it had migrations (``create_all``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, text

from aimesh_common import db
from aimesh_retrieval.jobs import QUEUED, RUNNING, Base, JobDocumentRow, JobRow, JobStore
from aimesh_retrieval.migrations import MIGRATIONS
from tests.conftest import migrate_empty_database, migrated_as_models

HEAD = "0002"

# What ``Base.metadata.create_all`` issued before the service had migrations (the models
# of that code, rendered by SQLAlchemy for each dialect; {ts}: its timestamp type).
BEFORE_MIGRATIONS = [
    """CREATE TABLE retrieval_ingest_job_documents (
        job_id VARCHAR(32) NOT NULL, seq INTEGER NOT NULL, document_id VARCHAR(256) NOT NULL,
        text TEXT NOT NULL, metadata_json TEXT NOT NULL, chunks INTEGER NOT NULL,
        done BOOLEAN NOT NULL, PRIMARY KEY (job_id, seq))""",
    """CREATE TABLE retrieval_ingest_jobs (
        id VARCHAR(32) NOT NULL, tenant_id VARCHAR(128) NOT NULL,
        collection VARCHAR(64) NOT NULL, state VARCHAR(16) NOT NULL,
        documents_total INTEGER NOT NULL, documents_done INTEGER NOT NULL,
        chunks_total INTEGER NOT NULL, chunks_embedded INTEGER NOT NULL,
        errors TEXT NOT NULL, attempts INTEGER NOT NULL, owner VARCHAR(32),
        lease_until {ts}, created_at {ts} NOT NULL, updated_at {ts} NOT NULL,
        PRIMARY KEY (id))""",
    "CREATE INDEX ix_retrieval_ingest_jobs_state ON retrieval_ingest_jobs (state)",
    "CREATE INDEX ix_retrieval_ingest_jobs_tenant_id ON retrieval_ingest_jobs (tenant_id)",
]


async def test_an_empty_database_is_migrated_to_exactly_the_models(
    empty_database_url: str,
) -> None:
    """A column or index added to a model without a migration (or the reverse) fails here;
    its own version table: services sharing the database do not collide."""
    assert await migrate_empty_database(empty_database_url, MIGRATIONS, Base.metadata) == {
        "retrieval_ingest_jobs",
        "retrieval_ingest_job_documents",
        "alembic_version_retrieval",
    }


async def test_a_database_of_the_code_before_migrations_is_adopted_with_its_jobs(
    empty_database_url: str,
) -> None:
    engine = db.create_engine(empty_database_url)
    timestamp = "TIMESTAMP WITH TIME ZONE" if engine.dialect.name == "postgresql" else "DATETIME"
    at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    try:
        async with engine.begin() as connection:
            for statement in BEFORE_MIGRATIONS:
                await connection.execute(text(statement.format(ts=timestamp)))
            # Rows as the old code wrote them (through the same mapped tables).
            row = {
                "id": "job1",
                "tenant_id": "tenant-a",
                "collection": "docs",
                "state": QUEUED,
                "documents_total": 2,
                "documents_done": 1,
                "chunks_total": 6,
                "chunks_embedded": 3,
                "errors": "[]",
                "attempts": 0,
                "created_at": at,
                "updated_at": at,
            }
            await connection.execute(insert(JobRow), [row])
            document = {"job_id": "job1", "metadata_json": "{}", "chunks": 3}
            await connection.execute(
                insert(JobDocumentRow),
                [
                    {**document, "seq": 0, "document_id": "d0", "text": "first", "done": True},
                    {
                        **document,
                        "seq": 1,
                        "document_id": "d1",
                        "text": "second",
                        "metadata_json": '{"k": 1}',
                        "done": False,
                    },
                ],
            )
    finally:
        await engine.dispose()

    store = await JobStore.open(empty_database_url, batch_chunks=96)  # migrates at open
    try:
        job = await store.get("tenant-a", "job1")
        assert (job.state, job.documents_total, job.documents_done, job.chunks_embedded) == (
            QUEUED,
            2,
            1,
            3,
        )
        assert job.created_at == at
        claimed = await store.claim("runner", lease=30)
        assert claimed is not None
        assert (claimed.id, claimed.state) == ("job1", RUNNING)
        pending = await store.next_batch("job1")
        assert [(seq, doc.id, doc.text, doc.metadata) for seq, doc in pending] == [
            (1, "d1", "second", {"k": 1})
        ]
    finally:
        await store.close()
    await migrated_as_models(empty_database_url, MIGRATIONS, Base.metadata)


async def test_a_database_holding_part_of_the_tables_is_refused(
    empty_database_url: str,
) -> None:
    """Only a database the old code made is adopted: half of one is left untouched."""
    engine = db.create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(BEFORE_MIGRATIONS[0]))
        with pytest.raises(RuntimeError, match="retrieval_ingest_jobs is missing"):
            await db.migrate(engine, MIGRATIONS)
        assert await db.current_revision(engine, MIGRATIONS) is None
    finally:
        await engine.dispose()
