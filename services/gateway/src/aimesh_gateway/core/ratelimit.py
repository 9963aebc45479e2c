"""Requests and tokens per minute, per principal (API key, user) and per tenant.

The algorithm is GCRA (a token bucket kept as one "theoretical arrival time" per key): a limit
of N per minute admits a burst of N, then one more every 60/N s. A check over several keys (key
and tenant, requests and tokens) is ONE atomic Redis script, so replicas sharing Redis admit
exactly the configured number; the clock is Redis' own (``TIME``), so replica clocks do not
matter. Without Redis the same algorithm runs in process (one worker only).

Tokens are known only after a call: admission checks that the token budgets are not already
exhausted (cost 0), and :meth:`RateLimiter.charge` spends the tokens afterwards (possibly into
debt, which then delays the next calls).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aimesh_gateway.core.config import Settings
from aimesh_gateway.core.metrics import HttpMetrics
from aimesh_gateway.core.security import Principal

log = logging.getLogger("aimesh.gateway.ratelimit")

PERIOD_MS = 60_000
TenantLimitLoader = Callable[[str], Awaitable[tuple[int | None, int | None] | None]]
"""``await loader(tenant_id)``: the tenant's (rpm, tpm) overrides, or None."""
# After a Redis failure, skip Redis for this long (so an outage costs no per-request timeout).
REDIS_RETRY_SECONDS = 1.0

# KEYS: the bucket keys. ARGV: mode ("check" or "charge"), then per key: limit, cost.
# Returns {allowed, retry_after_ms, then per key: remaining, reset_ms}.
GCRA_SCRIPT = """
local period = 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mode = ARGV[1]
local n = #KEYS
local tats = {}
local allowed = 1
local retry = 0
for i = 1, n do
  local limit = tonumber(ARGV[2 * i])
  local cost = tonumber(ARGV[2 * i + 1])
  local interval = period / limit
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - period
  if mode == 'check' and allow_at > now then
    allowed = 0
    if allow_at - now > retry then retry = allow_at - now end
  end
  tats[i] = {tat, new_tat, interval}
end
local out = {allowed, math.ceil(retry)}
for i = 1, n do
  local tat, new_tat, interval = tats[i][1], tats[i][2], tats[i][3]
  local final = tat
  if allowed == 1 or mode == 'charge' then
    final = new_tat
    if final > now then
      redis.call('SET', KEYS[i], tostring(final), 'PX', math.ceil(final - now) + 1000)
    end
  end
  out[#out + 1] = math.max(0, math.floor((now + period - final) / interval))
  out[#out + 1] = math.ceil(math.max(0, final - now))
end
return out
"""


@dataclass(frozen=True)
class Bucket:
    key: str
    limit: int
    cost: int


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_ms: int
    remaining: list[int]
    reset_ms: list[int]


class LimiterBackendError(Exception):
    pass


class LocalBuckets:
    """The same GCRA in process memory (the embedded default, one process)."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}

    async def run(self, mode: str, buckets: list[Bucket]) -> Verdict:
        now = time.monotonic() * 1000
        allowed, retry = True, 0.0
        plans: list[tuple[float, float, float]] = []
        for bucket in buckets:
            interval = PERIOD_MS / bucket.limit
            tat = max(self._tats.get(bucket.key, now), now)
            new_tat = tat + bucket.cost * interval
            allow_at = new_tat - PERIOD_MS
            if mode == "check" and allow_at > now:
                allowed = False
                retry = max(retry, allow_at - now)
            plans.append((tat, new_tat, interval))
        remaining, reset = [], []
        for bucket, (tat, new_tat, interval) in zip(buckets, plans, strict=True):
            final = new_tat if allowed or mode == "charge" else tat
            if final > now:
                self._tats[bucket.key] = final
            remaining.append(max(0, math.floor((now + PERIOD_MS - final) / interval)))
            reset.append(math.ceil(max(0.0, final - now)))
        return Verdict(allowed, math.ceil(retry), remaining, reset)


class RedisBuckets:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.script = redis.register_script(GCRA_SCRIPT)

    async def run(self, mode: str, buckets: list[Bucket]) -> Verdict:
        args: list[str | int] = [mode]
        for bucket in buckets:
            args += [bucket.limit, bucket.cost]
        try:
            reply = await self.script(keys=[b.key for b in buckets], args=args)
        except RedisError as error:
            raise LimiterBackendError(type(error).__name__) from error
        values = [int(v) for v in reply]
        return Verdict(bool(values[0]), values[1], values[2::2], values[3::2])


class RateLimiter:
    def __init__(
        self,
        settings: Settings,
        metrics: HttpMetrics,
        redis: Redis | None,
        tenant_limits: TenantLimitSource | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.prefix = f"{settings.redis_key_prefix}rl:"
        self.local = LocalBuckets()
        self.remote = RedisBuckets(redis) if redis is not None else None
        self.tenant_limits = tenant_limits
        self._redis_down_until = 0.0

    async def _limits(self, principal: Principal) -> tuple[int, int, int, int]:
        rpm = principal.rpm if principal.rpm is not None else self.settings.rate_limit_rpm
        tpm = principal.tpm if principal.tpm is not None else self.settings.rate_limit_tpm
        tenant_rpm = self.settings.tenant_rate_limit_rpm
        tenant_tpm = self.settings.tenant_rate_limit_tpm
        if self.tenant_limits is not None:
            override = await self.tenant_limits.get(principal.tenant_id)
            if override is not None:
                tenant_rpm = override[0] if override[0] is not None else tenant_rpm
                tenant_tpm = override[1] if override[1] is not None else tenant_tpm
        return rpm, tpm, tenant_rpm, tenant_tpm

    def _buckets(
        self, principal: Principal, limits: tuple[int, int, int, int], tokens: int | None
    ) -> list[Bucket]:
        rpm, tpm, tenant_rpm, tenant_tpm = limits
        who = f"{self.prefix}p:{principal.tenant_id}:{principal.subject}"
        tenant = f"{self.prefix}t:{principal.tenant_id}"
        candidates = (
            [(f"{who}:rpm", rpm, 1), (f"{tenant}:rpm", tenant_rpm, 1)] if tokens is None else []
        )
        candidates += [(f"{who}:tpm", tpm, tokens or 0), (f"{tenant}:tpm", tenant_tpm, tokens or 0)]
        return [Bucket(key, limit, cost) for key, limit, cost in candidates if limit > 0]

    async def _run(self, mode: str, buckets: list[Bucket]) -> Verdict | None:
        """The verdict, or None when the shared store is down and the policy is fail-open."""
        if self.remote is None:
            return await self.local.run(mode, buckets)
        if time.monotonic() >= self._redis_down_until:
            try:
                return await self.remote.run(mode, buckets)
            except LimiterBackendError as error:
                self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
                log.warning(
                    "rate-limit store unreachable (%s); policy fail-%s",
                    error,
                    self.settings.rate_limit_redis_failure,
                )
        self.metrics.limiter_errors.inc()
        if self.settings.rate_limit_redis_failure == "closed":
            raise HTTPException(503, "rate limiting is unavailable; retry shortly")
        return None

    async def admit(self, request: Request, principal: Principal) -> None:
        """Admit the request or raise 429; records the RateLimit-* values for the response."""
        limits = await self._limits(principal)
        buckets = self._buckets(principal, limits, tokens=None)
        if not buckets:
            return
        verdict = await self._run("check", buckets)
        if verdict is None:
            return
        tightest = min(range(len(buckets)), key=lambda i: verdict.remaining[i])
        reset_s = math.ceil(verdict.reset_ms[tightest] / 1000)
        request.state.rate_limit = (
            buckets[tightest].limit,
            verdict.remaining[tightest],
            reset_s,
        )
        if not verdict.allowed:
            self.metrics.rate_limited.inc()
            retry = max(1, math.ceil(verdict.retry_after_ms / 1000))
            raise HTTPException(
                429,
                "rate limit exceeded; retry after the time in Retry-After",
                headers={"Retry-After": str(retry)},
            )

    async def charge(self, principal: Principal, tokens: int) -> None:
        """Spend ``tokens`` from the principal's and tenant's token budgets."""
        if tokens <= 0:
            return
        buckets = self._buckets(principal, await self._limits(principal), tokens=tokens)
        if buckets:
            await self._run("charge", buckets)


class TenantLimitSource:
    """Per-tenant overrides from the database, cached briefly in process."""

    CACHE_SECONDS = 10.0

    def __init__(self, load: TenantLimitLoader) -> None:
        self._load = load
        self._cache: dict[str, tuple[float, tuple[int | None, int | None] | None]] = {}

    async def get(self, tenant_id: str) -> tuple[int | None, int | None] | None:
        cached = self._cache.get(tenant_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.CACHE_SECONDS:
            return cached[1]
        value = await self._load(tenant_id)
        self._cache[tenant_id] = (now, value)
        return value

    def forget(self, tenant_id: str) -> None:
        self._cache.pop(tenant_id, None)
