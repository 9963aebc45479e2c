"""Response cache: search and temperature-0 chat, per tenant, invalidated by writes."""

from __future__ import annotations

import asyncio
import logging
import uuid

import httpx
import pytest
from redis.asyncio import Redis

import aimesh_gateway.stores.cache as cache_module
from aimesh_gateway.observability.metrics import HttpMetrics
from aimesh_gateway.stores.cache import ResponseCache
from tests.gateway.helpers import editor, user


async def _ingest(client: httpx.AsyncClient, tenant: str, collection: str, text: str) -> None:
    response = await client.post(
        f"/v1/collections/{collection}/documents",
        json={"documents": [{"id": "d1", "text": text}]},
        headers=editor(tenant),
    )
    assert response.status_code in (200, 201), response.text


async def test_search_hits_bypasses_and_sees_writes(client: httpx.AsyncClient) -> None:
    tenant, collection = f"c-{uuid.uuid4().hex[:8]}", "docs"
    await _ingest(client, tenant, collection, "alpha beta gamma")
    url = f"/v1/collections/{collection}/search"
    query = {"query": "alpha", "top_k": 3}

    first = await client.post(url, json=query, headers=user(tenant))
    assert first.status_code == 200
    assert "x-cache" not in first.headers
    second = await client.post(url, json=query, headers=user(tenant))
    assert second.headers["x-cache"] == "hit"
    assert second.json() == first.json()

    fresh = await client.post(
        url, json=query, headers={**user(tenant), "Cache-Control": "no-cache"}
    )
    assert "x-cache" not in fresh.headers

    # Another tenant with the same collection name and query never sees this entry.
    other = f"c-{uuid.uuid4().hex[:8]}"
    await _ingest(client, other, collection, "alpha only here")
    theirs = await client.post(url, json=query, headers=user(other))
    assert "x-cache" not in theirs.headers
    assert theirs.json() != first.json()

    # A write to the collection makes the next search fresh, with the new text.
    await _ingest(client, tenant, collection, "alpha replaced text")
    after = await client.post(url, json=query, headers=user(tenant))
    assert "x-cache" not in after.headers
    assert "replaced" in after.text

    metrics = (await client.get("/metrics")).text
    assert 'result="hit"' in metrics
    assert 'result="bypass"' in metrics


async def test_only_temperature_zero_chat_is_cached(client: httpx.AsyncClient) -> None:
    tenant = f"c-{uuid.uuid4().hex[:8]}"
    messages = [{"role": "user", "content": f"cache me {uuid.uuid4().hex[:6]}"}]
    zero = {"model": "default", "messages": messages, "temperature": 0}
    first = await client.post("/v1/chat/completions", json=zero, headers=user(tenant))
    second = await client.post("/v1/chat/completions", json=zero, headers=user(tenant))
    assert second.headers.get("x-cache") == "hit"
    assert second.json() == first.json()
    warm = {**zero, "temperature": 0.7}
    await client.post("/v1/chat/completions", json=warm, headers=user(tenant))
    again = await client.post("/v1/chat/completions", json=warm, headers=user(tenant))
    assert "x-cache" not in again.headers


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_entries_expire(backend: str) -> None:
    redis = Redis.from_url("redis://127.0.0.1:6379/0") if backend == "redis" else None
    prefix = f"aimesh-test-{uuid.uuid4().hex[:8]}:"
    cache = ResponseCache(redis, prefix, 0.2, HttpMetrics())
    key = cache.key("t", "/r", "m", {"q": 1}, 0)
    assert key != cache.key("u", "/r", "m", {"q": 1}, 0)
    assert key == cache.key("t", "/r", "m", {"q": 1}, 0)
    await cache.set(key, b"{}")
    assert await cache.get(key, "/r") == b"{}"

    await asyncio.sleep(0.3)
    assert await cache.get(key, "/r") is None
    if redis is not None:
        await redis.aclose()


async def test_a_dead_redis_is_left_alone_for_a_while_then_tried_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A server that accepts connections and never answers: each Redis call would wait.
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    redis = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.2)
    monkeypatch.setattr(cache_module, "RETRY_SECONDS", 0.5)
    metrics = HttpMetrics()
    cache = ResponseCache(redis, "p:", 60, metrics)
    try:
        with caplog.at_level(logging.WARNING, logger="aimesh.gateway.cache"):
            for _ in range(5):
                assert await cache.get("k", "/r") is None
                await cache.set("k", b"{}")
        assert len(accepted) == 1  # one call waited for the dead server; the rest did not
        assert metrics.cache.labels("/r", "error")._value.get() == 5
        assert sum("answering without the cache" in r.getMessage() for r in caplog.records) == 1

        await asyncio.sleep(0.6)
        assert await cache.get("k", "/r") is None  # tried again after the pause
        assert len(accepted) == 2
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await redis.aclose()


def _size(key: str, value: bytes) -> int:
    return len(key) + len(value) + cache_module.ENTRY_OVERHEAD_BYTES


def _gauge(metrics: HttpMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None
    return value


async def test_the_local_store_is_bounded_in_bytes_least_recently_used_first() -> None:
    entry = _size("k00", b"x" * 1000)
    metrics = HttpMetrics()
    cache = ResponseCache(None, "p:", 60, metrics, max_bytes=10 * entry, max_entry_bytes=5000)
    for index in range(10):
        await cache.set(f"k{index:02d}", b"x" * 1000)
    assert await cache.get("k00", "/r") is not None  # k00 is now the most recently used
    for index in range(10, 15):
        await cache.set(f"k{index:02d}", b"x" * 1000)

    assert cache.local.bytes <= 10 * entry
    assert cache.local.bytes == sum(_size(k, v) for k, (_, v) in cache.local.entries.items())
    assert await cache.get("k00", "/r") is not None
    assert [await cache.get(f"k{i:02d}", "/r") for i in range(1, 6)] == [None] * 5
    assert _gauge(metrics, "aimesh_cache_entries") == 10
    assert _gauge(metrics, "aimesh_cache_bytes") == cache.local.bytes

    # Replacing an entry counts its new size once, not both.
    await cache.set("k00", b"y" * 10)
    assert cache.local.bytes == sum(_size(k, v) for k, (_, v) in cache.local.entries.items())


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_a_response_over_the_entry_limit_is_not_cached(backend: str) -> None:
    redis = Redis.from_url("redis://127.0.0.1:6379/0") if backend == "redis" else None
    metrics = HttpMetrics()
    prefix = f"aimesh-test-{uuid.uuid4().hex[:8]}:"
    cache = ResponseCache(redis, prefix, 60, metrics, max_entry_bytes=100)
    try:
        await cache.set(f"{prefix}big", b"x" * 101, "/r")
        await cache.set(f"{prefix}small", b"x" * 100, "/r")
        assert await cache.get(f"{prefix}big", "/r") is None
        assert await cache.get(f"{prefix}small", "/r") == b"x" * 100
        assert metrics.cache.labels("/r", "too_large")._value.get() == 1
    finally:
        if redis is not None:
            await redis.delete(f"{prefix}small")
            await redis.aclose()


async def test_expired_entries_are_swept_without_being_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cache_module, "SWEEP_SECONDS", 0.0)
    metrics = HttpMetrics()
    cache = ResponseCache(None, "p:", 0.1, metrics)
    for index in range(50):
        await cache.set(f"old{index}", b"x" * 100)
    await asyncio.sleep(0.2)
    await cache.set("new", b"{}")  # a write sweeps: the 50 expired entries go, unread
    assert list(cache.local.entries) == ["new"]
    assert cache.local.bytes == _size("new", b"{}")
    assert _gauge(metrics, "aimesh_cache_entries") == 1


async def test_generation_counters_of_collections_not_written_lately_are_forgotten_safely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 28: one counter per collection written within a TTL, not per collection ever
    written; forgetting one never brings back an answer cached before a write."""
    monkeypatch.setattr(cache_module, "SWEEP_SECONDS", 0.0)
    cache = ResponseCache(None, "p:", 0.2, HttpMetrics())
    await cache.invalidate_collection("t", "c")
    stale_generation = await cache.generation("t", "c")
    stale = cache.key("t", "search", "", {"q": 1}, stale_generation)
    await cache.set(stale, b"old answer")
    for index in range(100):  # collections written once, then never again
        await cache.invalidate_collection("t", f"temporary-{index}")
    assert len(cache.local.counters) == 101
    await asyncio.sleep(1.3)  # longer than the TTL plus the sweep's margin
    await cache.set("other", b"{}")  # a write sweeps
    assert cache.local.counters == {}
    assert await cache.get(stale, "/r") is None  # expired with its generation
    # A new write gets a generation never used before, so no old key can match it.
    await cache.invalidate_collection("t", "c")
    assert await cache.generation("t", "c") > stale_generation
    # While a counter is young it is kept: its older entries may still be alive.
    await cache.set("again", b"{}")
    assert len(cache.local.counters) == 1
