"""Exact-response cache for deterministic calls (search, embeddings, temperature-0 chat).

Keyed by tenant, route, model and the normalized request (canonical JSON, hashed), so two
tenants never share an entry. Entries live ``cache_ttl_seconds`` in Redis when configured
(shared by replicas) or in a bounded in-process LRU. Search entries also carry the collection's
generation, which document writes bump, so an upsert or delete is visible at once.
``Cache-Control: no-cache`` on a request skips the lookup (the fresh answer is stored).
A cache failure is a miss, never an error; after one the cache leaves Redis alone for
``RETRY_SECONDS`` (requests then go without it instead of each waiting for a dead server),
and the outage is logged once.

Memory: the in-process store is bounded in bytes (``cache_max_bytes``: keys, values and a
fixed per-entry overhead), least recently used entries go first, expired entries are swept
at most every ``SWEEP_SECONDS`` (not left until the bound pushes them out), and a response
larger than ``cache_max_entry_bytes`` is never cached (in Redis either). Entries and bytes
are exported as ``aimesh_cache_entries`` and ``aimesh_cache_bytes``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from aimesh_gateway.observability.metrics import HttpMetrics

log = logging.getLogger("aimesh.gateway.cache")

RETRY_SECONDS = 1.0
# What one entry costs beyond the characters of its key and value, measured on CPython 3.11:
# the OrderedDict node, tuple and float (146 bytes by tracemalloc) and the str and bytes
# object headers (49 + 33 by sys.getsizeof).
ENTRY_OVERHEAD_BYTES = 230
SWEEP_SECONDS = 30.0


class _LocalStore:
    """An LRU map bounded by bytes, whose expired entries are swept periodically."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.bytes = 0
        # The generation of each (tenant, collection) written lately, and when it was set.
        # Generations come from one sequence of this process and are never reused, so a
        # counter may be forgotten once every entry cached before its last bump has expired
        # (the sweep drops counters older than the longest TTL seen): a lookup then gets
        # generation 0, which only entries cached after the forgetting carry. So the map
        # holds the collections written within a TTL, not every collection ever written.
        self.counters: dict[str, tuple[int, float]] = {}
        self._sequence = 0
        self._longest_ttl = 0.0
        self._next_sweep = 0.0

    @staticmethod
    def _size(key: str, value: bytes) -> int:
        return len(key) + len(value) + ENTRY_OVERHEAD_BYTES

    def _drop(self, key: str) -> None:
        _, value = self.entries.pop(key)
        self.bytes -= self._size(key, value)

    def get(self, key: str) -> bytes | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return entry[1]

    def generation(self, key: str) -> int:
        entry = self.counters.get(key)
        return 0 if entry is None else entry[0]

    def bump(self, key: str) -> None:
        """A new generation for ``key``, never used before in this process."""
        self._sequence += 1
        self.counters[key] = (self._sequence, time.monotonic())

    def set(self, key: str, value: bytes, ttl: float) -> None:
        now = time.monotonic()
        self._longest_ttl = max(self._longest_ttl, ttl)
        if now >= self._next_sweep:
            self.sweep(now)
        size = self._size(key, value)
        if size > self.max_bytes:
            return
        if key in self.entries:
            self._drop(key)
        self.entries[key] = (now + ttl, value)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self.entries)))

    def sweep(self, now: float) -> int:
        """Drop every expired entry; returns how many (O(entries), at most every SWEEP_SECONDS)."""
        self._next_sweep = now + SWEEP_SECONDS
        expired = [key for key, (expires, _) in self.entries.items() if expires < now]
        for key in expired:
            self._drop(key)
        settled = now - self._longest_ttl - 1.0
        for key in [key for key, (_, bumped) in self.counters.items() if bumped < settled]:
            del self.counters[key]
        return len(expired)


class ResponseCache:
    def __init__(
        self,
        redis: Redis | None,
        prefix: str,
        ttl_seconds: float,
        metrics: HttpMetrics,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_entry_bytes: int = 1024 * 1024,
    ) -> None:
        self.redis = redis
        self.prefix = f"{prefix}cache:"
        self.ttl = ttl_seconds
        self.metrics = metrics
        self.max_entry_bytes = max_entry_bytes
        self.local = _LocalStore(max_bytes)
        metrics.cache_entries.set_function(lambda: len(self.local.entries))
        metrics.cache_bytes.set_function(lambda: self.local.bytes)
        self._down_until = 0.0  # time.monotonic() before which Redis is not asked
        self._down = False

    def _usable(self) -> bool:
        """Whether Redis may be asked now (not within RETRY_SECONDS of a failure)."""
        return time.monotonic() >= self._down_until

    def _failed(self, operation: str, error: RedisError) -> None:
        self._down_until = time.monotonic() + RETRY_SECONDS
        if not self._down:
            self._down = True
            log.warning(
                "cache %s failed (%s); answering without the cache until Redis is back",
                operation,
                type(error).__name__,
            )

    def _worked(self) -> None:
        if self._down:
            self._down = False
            log.info("cache reachable again")

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def key(self, tenant_id: str, route: str, model: str, payload: Any, generation: int) -> str:
        canonical = json.dumps(
            [tenant_id, route, model, generation, payload],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return f"{self.prefix}{tenant_id}:{hashlib.sha256(canonical.encode()).hexdigest()}"

    def _generation_key(self, tenant_id: str, collection: str) -> str:
        return f"{self.prefix}gen:{tenant_id}:{collection}"

    async def generation(self, tenant_id: str, collection: str) -> int:
        key = self._generation_key(tenant_id, collection)
        if self.redis is None:
            return self.local.generation(key)
        if not self._usable():
            raise RedisError("cache backing off after a failure")
        try:
            value = await self.redis.get(key)
        except RedisError as error:
            self._failed("read", error)
            raise
        return int(value) if value is not None else 0

    async def invalidate_collection(self, tenant_id: str, collection: str) -> None:
        """Make every cached answer about this collection unreachable."""
        key = self._generation_key(tenant_id, collection)
        if self.redis is None:
            self.local.bump(key)
            return
        try:
            await self.redis.incr(key)
        except RedisError as error:
            # Always tried (not skipped while backing off): a lost bump could let a cached
            # answer outlive the write it is about, until its TTL.
            self._failed("invalidation", error)
            log.warning("cache invalidation failed: %s", type(error).__name__)

    async def get(self, key: str, route: str) -> bytes | None:
        if self.redis is not None and not self._usable():
            self.metrics.cache.labels(route, "error").inc()
            return None
        try:
            value = self.local.get(key) if self.redis is None else await self.redis.get(key)
            if isinstance(value, str):
                value = value.encode()
        except RedisError as error:
            self._failed("read", error)
            self.metrics.cache.labels(route, "error").inc()
            return None
        if self.redis is not None:
            self._worked()
        self.metrics.cache.labels(route, "hit" if value is not None else "miss").inc()
        return value

    async def set(self, key: str, value: bytes, route: str = "") -> None:
        if len(value) > self.max_entry_bytes:
            self.metrics.cache.labels(route, "too_large").inc()
            return
        if self.redis is None:
            self.local.set(key, value, self.ttl)
            return
        if not self._usable():
            return
        try:
            await self.redis.set(key, value, px=int(self.ttl * 1000))
        except RedisError as error:
            self._failed("write", error)
