"""Cache invalidations over the real Redis: a key revoked or a limit changed through one
gateway replica is dropped by the others' caches at once, not when their entries expire."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from aimesh_gateway.core.invalidation import Invalidations
from aimesh_gateway.main import create_app
from aimesh_gateway.state import state_of
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import ADMIN, bearer, running

SHARED_REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def replicas(fake_mesh: FakeMesh) -> AsyncIterator[list[tuple[FastAPI, httpx.AsyncClient]]]:
    """Two gateway apps (own caches) on one database and one Redis, caching keys and
    limits far longer than any test waits."""
    prefix = f"aimesh-test-{uuid.uuid4().hex[:10]}:"
    async with AsyncExitStack() as stack:
        pairs = []
        for _ in range(2):
            app = create_app(
                fake_mesh.settings(
                    redis_url=SHARED_REDIS, redis_key_prefix=prefix, api_key_cache_seconds=300
                )
            )
            client = await stack.enter_async_context(running(app))
            await asyncio.wait_for(state_of(app).invalidations.subscribed.wait(), 10)
            pairs.append((app, client))
        yield pairs


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_key_revoked_on_one_replica_is_refused_by_the_other_at_once(
    replicas: list[tuple[FastAPI, httpx.AsyncClient]],
) -> None:
    (_, first), (_, second) = replicas
    created = await first.post("/v1/admin/keys", json={"roles": ["user"]}, headers=ADMIN)
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    assert (await second.get("/v1/models", headers=bearer(key))).status_code == 200  # cached

    started = time.monotonic()
    assert (await first.delete(f"/v1/admin/keys/{key_id}", headers=ADMIN)).status_code == 200

    async def refused() -> bool:
        return (await second.get("/v1/models", headers=bearer(key))).status_code == 401

    assert await _eventually(refused), "the other replica still accepts the revoked key"
    assert time.monotonic() - started < 3.0  # its cache would have kept the key 300 s


async def test_a_tenant_limit_change_drops_the_other_replicas_entry(
    replicas: list[tuple[FastAPI, httpx.AsyncClient]],
) -> None:
    (_, first), (second_app, _) = replicas
    tenant = f"inv-{uuid.uuid4().hex[:8]}"
    limits = state_of(second_app).tenant_limits
    assert await limits.get(tenant) is None  # cached: no override
    response = await first.put(
        f"/v1/admin/tenants/{tenant}/limits", json={"rpm": 7, "tpm": None}, headers=ADMIN
    )
    assert response.status_code == 204, response.text

    async def seen() -> bool:
        return bool(await limits.get(tenant) == (7, None))

    assert await _eventually(seen)


async def test_announcing_without_redis_is_a_no_op_and_resubscribing_resets() -> None:
    quiet = Invalidations(None, "unused:")
    quiet.announce("key", "abc")  # nobody else to tell
    await quiet.close()

    prefix = f"aimesh-test-{uuid.uuid4().hex[:10]}:"
    redis = Redis.from_url(SHARED_REDIS)
    listener, speaker = Invalidations(redis, prefix), Invalidations(redis, prefix)
    seen: list[str] = []
    resets: list[int] = []
    listener.on("key", seen.append, lambda: resets.append(1))
    listener.start(SHARED_REDIS)
    await asyncio.wait_for(listener.subscribed.wait(), 10)
    assert resets == [1]  # a (re)subscription drops whatever was cached before
    speaker.announce("key", "prefix-1")
    speaker.announce("other-kind", "ignored")

    async def arrived() -> bool:
        return seen == ["prefix-1"]

    assert await _eventually(arrived)
    await listener.close()
    await speaker.close()
    await redis.aclose()
