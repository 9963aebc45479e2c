"""The vector-store records on both database backends (SQLite, PostgreSQL)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from aimesh_gateway.db.engine import session_factory
from aimesh_gateway.stores.vector_stores import (
    Outcome,
    VectorStoreRecords,
    attributes_of,
    document_ids_of,
    metadata_of,
)


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def test_stores_files_counts_and_forgetting(db_engine: AsyncEngine) -> None:
    records = VectorStoreRecords(session_factory(db_engine))
    tenant, other = _tenant(), _tenant()
    await records.create(tenant, "vs_a", name="A", description="d", metadata={"k": "v"})
    assert metadata_of((await records.of(tenant, ["vs_a", "native"]))["vs_a"]) == {"k": "v"}
    assert await records.of(other, ["vs_a"]) == {}

    first = await records.attach(
        tenant,
        "vs_a",
        "file-1",
        job_id="j1",
        outcome=Outcome("in_progress"),
        usage_bytes=10,
        attributes={"lang": "en"},
        document_ids=["file-1"],
    )
    await records.attach(
        tenant,
        "vs_a",
        "file-2",
        job_id="",
        outcome=Outcome("failed", "invalid_file", "not a PDF"),
        usage_bytes=0,
        attributes={},
        document_ids=[],
    )
    assert [row.file_id for row in await records.pending(tenant, ["vs_a"], 10)] == ["file-1"]
    statuses, usage = (await records.counts(tenant, ["vs_a"]))["vs_a"]
    assert (dict(statuses), usage) == ({"in_progress": 1, "failed": 1}, 10)

    await records.settle(first, Outcome("completed"))
    stored = await records.file(tenant, "vs_a", "file-1")
    assert stored is not None
    assert (stored.status, attributes_of(stored), document_ids_of(stored)) == (
        "completed",
        {"lang": "en"},
        ["file-1"],
    )
    assert await records.pending(tenant, ["vs_a"], 10) == []
    rows, more = await records.files_page(
        tenant, "vs_a", status="failed", order="desc", after=None, before=None, limit=10
    )
    assert ([row.error_code for row in rows], more) == (["invalid_file"], False)
    # A settle of an older attempt does not overwrite the file added again since.
    again = await records.attach(
        tenant,
        "vs_a",
        "file-1",
        job_id="j2",
        outcome=Outcome("in_progress"),
        usage_bytes=10,
        attributes={},
        document_ids=["file-1"],
    )
    await records.settle(first, Outcome("failed", "server_error", "old job"))
    current = await records.file(tenant, "vs_a", "file-1")
    assert current is not None
    assert (current.job_id, current.status) == (again.job_id, "in_progress")

    renamed = await records.update(tenant, "native", name="Native", metadata=None)
    assert (renamed.id, renamed.name) == ("native", "Native")
    await records.forget(tenant, "vs_a")
    assert await records.file(tenant, "vs_a", "file-1") is None
    assert await records.of(tenant, ["vs_a"]) == {}
    assert await records.counts(tenant, ["vs_a"]) == {}
