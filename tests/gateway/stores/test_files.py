"""The file store on both database backends (SQLite, PostgreSQL): bytes, the tenant's
limit, OpenAI's cursor pages and tenant scoping."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from aimesh_gateway.db.engine import session_factory
from aimesh_gateway.stores.files import FileStore, TenantQuotaExceeded, UnknownCursor


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def test_add_read_limit_and_delete(db_engine: AsyncEngine) -> None:
    store = FileStore(session_factory(db_engine), max_tenant_bytes=10)
    tenant, other = _tenant(), _tenant()
    row = await store.add(tenant, "a.txt", "assistants", b"\x00\xffbytes")
    assert row.id.startswith("file-")
    assert row.bytes == 7
    assert await store.content(tenant, row.id) == b"\x00\xffbytes"
    assert await store.content(other, row.id) is None
    assert await store.get(other, row.id) is None
    with pytest.raises(TenantQuotaExceeded) as full:
        await store.add(tenant, "b.txt", "assistants", b"1234")  # 7 + 4 > 10
    assert (full.value.stored, full.value.limit) == (7, 10)
    await store.add(other, "b.txt", "assistants", b"1234")  # another tenant's own limit
    assert not await store.delete(other, row.id)
    assert await store.delete(tenant, row.id)
    assert await store.get(tenant, row.id) is None
    assert await store.content(tenant, row.id) is None
    await store.add(tenant, "b.txt", "assistants", b"1234")  # the space is free again


async def test_cursor_pages_in_both_orders(db_engine: AsyncEngine) -> None:
    store = FileStore(session_factory(db_engine), max_tenant_bytes=1000)
    tenant = _tenant()
    ids = [(await store.add(tenant, f"{n}.txt", "assistants", b"x")).id for n in range(5)]
    await store.add(_tenant(), "other.txt", "assistants", b"x")

    async def page(**kwargs: object) -> tuple[list[str], bool]:
        defaults: dict[str, object] = {"purpose": None, "after": None, "before": None}
        rows, more = await store.page(tenant, **{**defaults, **kwargs})  # type: ignore[arg-type]
        return [row.id for row in rows], more

    assert await page(order="asc", limit=10) == (ids, False)
    assert await page(order="desc", limit=2) == ([ids[4], ids[3]], True)
    assert await page(order="desc", limit=2, after=ids[3]) == ([ids[2], ids[1]], True)
    assert await page(order="desc", limit=2, after=ids[1]) == ([ids[0]], False)
    assert await page(order="asc", limit=2, after=ids[2]) == ([ids[3], ids[4]], False)
    # before: the page just before the cursor, in list order.
    assert await page(order="asc", limit=2, before=ids[4]) == ([ids[2], ids[3]], True)
    assert await page(order="desc", limit=10, before=ids[2]) == ([ids[4], ids[3]], False)
    assert await page(order="asc", limit=10, purpose="user_data") == ([], False)
    with pytest.raises(UnknownCursor):
        await page(order="asc", limit=2, after="file-nothing")
