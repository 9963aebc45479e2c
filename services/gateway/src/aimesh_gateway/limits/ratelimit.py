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

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from fastapi import HTTPException, Request
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aimesh_gateway.auth.security import Principal
from aimesh_gateway.core.config import Settings
from aimesh_gateway.core.invalidation import Invalidations
from aimesh_gateway.observability.metrics import HttpMetrics

log = logging.getLogger("aimesh.gateway.ratelimit")

PERIOD_MS = 60_000
TenantLimitLoader = Callable[[str], Awaitable[tuple[int | None, int | None] | None]]
"""``await loader(tenant_id)``: the tenant's (rpm, tpm) overrides, or None."""
# After a Redis failure, skip Redis for this long (so an outage costs no per-request timeout).
REDIS_RETRY_SECONDS = 1.0

# KEYS: the bucket keys. ARGV: mode ("check" or "charge"), the most requests a check may lease
# (0: none), the least a request bucket must have left for a lease, then per key: limit, cost,
# refund (unused leased requests given back first).
# Returns {allowed, retry_after_ms, leased, then per key: remaining, reset_ms}.
GCRA_SCRIPT = """
local period = 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mode = ARGV[1]
local lease_max = tonumber(ARGV[2])
local lease_min = tonumber(ARGV[3])
local n = #KEYS
local state = {}
local allowed = 1
local retry = 0
for i = 1, n do
  local limit = tonumber(ARGV[3 * i + 1])
  local cost = tonumber(ARGV[3 * i + 2])
  local refund = tonumber(ARGV[3 * i + 3])
  local interval = period / limit
  local stored = tonumber(redis.call('GET', KEYS[i]) or now)
  local tat = math.max(stored, now)
  if refund > 0 then tat = math.max(now, tat - refund * interval) end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - period
  if mode == 'check' and allow_at > now then
    allowed = 0
    if allow_at - now > retry then retry = allow_at - now end
  end
  state[i] = {tat, new_tat, interval, cost, limit, stored}
end
local lease = 0
if mode == 'check' and allowed == 1 and lease_max > 0 then
  lease = lease_max
  for i = 1, n do
    local s = state[i]
    local left = math.floor((now + period - s[2]) / s[3])
    if s[4] > 0 then
      if left < lease_min then lease = 0 else lease = math.min(lease, math.floor(left / 8)) end
    elseif left * 2 < s[5] then
      lease = 0
    end
  end
end
local out = {allowed, math.ceil(retry), lease}
for i = 1, n do
  local s = state[i]
  local final = s[1]
  if allowed == 1 or mode == 'charge' then
    final = s[2]
    if s[4] > 0 then final = final + lease * s[3] end
  end
  if final > now then
    redis.call('SET', KEYS[i], tostring(final), 'PX', math.ceil(final - now) + 1000)
  elseif s[6] > now then
    redis.call('DEL', KEYS[i])
  end
  out[#out + 1] = math.max(0, math.floor((now + period - final) / s[3]))
  out[#out + 1] = math.ceil(math.max(0, final - now))
end
return out
"""


@dataclass(frozen=True)
class Bucket:
    key: str
    limit: int
    cost: int
    refund: int = 0  # leased requests given back (Redis only)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_ms: int
    remaining: list[int]
    reset_ms: list[int]
    leased: int = 0  # extra requests reserved for this replica (Redis only)


class LimiterBackendError(Exception):
    pass


class LocalBuckets:
    """The same GCRA in process memory (the embedded default, one process).

    A bucket whose theoretical arrival time has passed holds no state (a missing bucket
    means the same), so buckets are swept every ``SWEEP_MS``: the map holds only the keys
    that made a request within the last period.
    """

    SWEEP_MS = PERIOD_MS

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._tats)

    def sweep(self, now: float) -> None:
        self._next_sweep = now + self.SWEEP_MS
        for key in [key for key, tat in self._tats.items() if tat <= now]:
            del self._tats[key]

    async def run(self, mode: str, buckets: list[Bucket]) -> Verdict:
        now = time.monotonic() * 1000
        if now >= self._next_sweep:
            self.sweep(now)
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

    async def run(
        self, mode: str, buckets: list[Bucket], lease_max: int = 0, lease_min: int = 0
    ) -> Verdict:
        args: list[str | int] = [mode, lease_max, lease_min]
        for bucket in buckets:
            args += [bucket.limit, bucket.cost, bucket.refund]
        try:
            reply = await self.script(keys=[b.key for b in buckets], args=args)
        except RedisError as error:
            raise LimiterBackendError(type(error).__name__) from error
        values = [int(v) for v in reply]
        return Verdict(bool(values[0]), values[1], values[3::2], values[4::2], values[2])


@dataclass
class Lease:
    """Requests one caller may make on this replica without asking Redis: already charged
    there by the check that granted them, so they never let the replicas together admit more
    than the limit."""

    buckets: list[Bucket]  # the request buckets the credits were charged to
    credits: int
    expires: float  # time.monotonic()
    header: tuple[int, int, int, float, float]
    """The tightest bucket at the grant: limit, remaining, reset (ms), ms per request (0 for a
    token bucket), and when (time.monotonic())."""

    def rate_limit_header(self, now: float) -> tuple[int, int, int]:
        """RateLimit-Limit, -Remaining and -Reset (s) as the grant reported them, counting
        the credits not yet used as remaining."""
        limit, remaining, reset, interval, since = self.header
        reset_ms = float(reset)
        if interval:
            remaining += self.credits
            reset_ms -= self.credits * interval
        reset_ms -= (now - since) * 1000
        return limit, remaining, math.ceil(max(0.0, reset_ms) / 1000)


class RateLimiter:
    """Admission and token charging over the buckets of a principal and its tenant.

    With Redis, a check far from every limit (each request bucket keeps at least
    ``lease_min_remaining`` after it, each token budget at least half) also reserves up to
    ``lease`` more requests (an eighth of what is left) for the same caller on this replica.
    Those are admitted without a Redis call for up to ``LEASE_SECONDS``; what is unused is
    given back by the next check or by a sweep. Replicas together still never admit more
    than a limit; near a limit every request asks Redis, so they admit exactly the limit.
    """

    LEASE_SECONDS = 1.0
    LEASE_MIN_REMAINING = 64

    def __init__(
        self,
        settings: Settings,
        metrics: HttpMetrics,
        redis: Redis | None,
        tenant_limits: TenantLimitSource | None = None,
        *,
        lease_min_remaining: int = LEASE_MIN_REMAINING,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.prefix = f"{settings.redis_key_prefix}rl:"
        self.local = LocalBuckets()
        self.remote = RedisBuckets(redis) if redis is not None else None
        self.tenant_limits = tenant_limits
        self._redis_down_until = 0.0
        self.lease_max = settings.rate_limit_lease if redis is not None else 0
        self.lease_min_remaining = lease_min_remaining
        self._leases: dict[str, Lease] = {}  # by the principal's bucket prefix
        metrics.limiter_state.labels("bucket").set_function(lambda: len(self.local))
        metrics.limiter_state.labels("lease").set_function(lambda: len(self._leases))
        self._sweeper: asyncio.Task[None] | None = None

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

    def _who(self, principal: Principal) -> str:
        return f"{self.prefix}p:{principal.tenant_id}:{principal.subject}"

    def _buckets(
        self, principal: Principal, limits: tuple[int, int, int, int], tokens: int | None
    ) -> list[Bucket]:
        rpm, tpm, tenant_rpm, tenant_tpm = limits
        who = self._who(principal)
        tenant = f"{self.prefix}t:{principal.tenant_id}"
        candidates = (
            [(f"{who}:rpm", rpm, 1), (f"{tenant}:rpm", tenant_rpm, 1)] if tokens is None else []
        )
        candidates += [(f"{who}:tpm", tpm, tokens or 0), (f"{tenant}:tpm", tenant_tpm, tokens or 0)]
        return [Bucket(key, limit, cost) for key, limit, cost in candidates if limit > 0]

    async def _run(
        self, mode: str, buckets: list[Bucket], lease: int = 0, *, admission: bool = True
    ) -> Verdict | None:
        """The verdict, or None when the shared store is down and the policy is fail-open
        (or this is no admission: spending after the work never fails the request)."""
        if self.remote is None:
            return await self.local.run(mode, buckets)
        if time.monotonic() >= self._redis_down_until:
            try:
                return await self.remote.run(mode, buckets, lease, self.lease_min_remaining)
            except LimiterBackendError as error:
                self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
                log.warning(
                    "rate-limit store unreachable (%s); policy fail-%s",
                    error,
                    self.settings.rate_limit_redis_failure,
                )
        self.metrics.limiter_errors.inc()
        if admission and self.settings.rate_limit_redis_failure == "closed":
            raise HTTPException(503, "rate limiting is unavailable; retry shortly")
        return None

    async def admit(self, request: Request, principal: Principal) -> None:
        """Admit the request or raise 429; records the RateLimit-* values for the response."""
        limits = await self._limits(principal)
        buckets = self._buckets(principal, limits, tokens=None)
        if not buckets:
            return
        who = self._who(principal)
        lease = self._leases.get(who)
        if lease is not None:
            now = time.monotonic()
            if lease.credits > 0 and now < lease.expires:
                lease.credits -= 1
                request.state.rate_limit = lease.rate_limit_header(now)
                return
            # Spent or expired: what is left goes back with this check.
            del self._leases[who]
            buckets = [replace(b, refund=lease.credits) if b.cost else b for b in buckets]
        verdict = await self._run("check", buckets, self.lease_max)
        if verdict is None:
            return
        header = self._grant(who, buckets, verdict)
        request.state.rate_limit = header
        if not verdict.allowed:
            self.metrics.rate_limited.labels(*self._refused_by(principal, buckets, verdict)).inc()
            retry = max(1, math.ceil(verdict.retry_after_ms / 1000))
            raise HTTPException(
                429,
                "rate limit exceeded; retry after the time in Retry-After",
                headers={"Retry-After": str(retry)},
            )

    def _refused_by(
        self, principal: Principal, buckets: list[Bucket], verdict: Verdict
    ) -> tuple[str, str]:
        """``(limit, scope)`` of the bucket that refused: rpm or tpm; key, user or tenant.

        A refusing bucket has fewer requests left than the check costs (a token budget,
        checked at cost 0, has none left), so the first such bucket is named."""
        refused = next(
            (
                bucket
                for bucket, left in zip(buckets, verdict.remaining, strict=True)
                if left < max(bucket.cost, 1)
            ),
            buckets[0],
        )
        limit = refused.key.rpartition(":")[2]
        if refused.key.startswith(f"{self.prefix}t:"):
            return limit, "tenant"
        return limit, "key" if principal.method == "api_key" else "user"

    def _grant(self, who: str, buckets: list[Bucket], verdict: Verdict) -> tuple[int, int, int]:
        """Keep the requests a check leased; the RateLimit-* values of the tightest bucket."""
        now = time.monotonic()
        leased = verdict.leased

        def left(i: int) -> int:
            return verdict.remaining[i] + (leased if buckets[i].cost else 0)

        tightest = min(range(len(buckets)), key=left)
        bucket = buckets[tightest]
        interval = PERIOD_MS / bucket.limit if bucket.cost else 0.0
        lease = Lease(
            [replace(b, cost=0, refund=0) for b in buckets if b.cost],
            leased,
            now + self.LEASE_SECONDS,
            (bucket.limit, verdict.remaining[tightest], verdict.reset_ms[tightest], interval, now),
        )
        if leased:
            held = self._leases.get(who)
            if held is not None:  # a concurrent check's lease: both stay usable
                lease.credits += held.credits
            self._leases[who] = lease
            if self._sweeper is None:
                self._sweeper = asyncio.create_task(self._sweep())
        return lease.rate_limit_header(now)

    async def charge(self, principal: Principal, tokens: int) -> None:
        """Spend ``tokens`` from the principal's and tenant's token budgets."""
        if tokens <= 0:
            return
        buckets = self._buckets(principal, await self._limits(principal), tokens=tokens)
        if not buckets:
            return
        # The work is done and answered: a store outage now loses these tokens' charge
        # (counted and logged by _run), never the answer, whatever the policy.
        verdict = await self._run("charge", buckets, admission=False)
        if verdict is not None and any(
            2 * left < bucket.limit for left, bucket in zip(verdict.remaining, buckets, strict=True)
        ):
            # A token budget is below half: no more admission without asking Redis.
            lease = self._leases.get(self._who(principal))
            if lease is not None:
                lease.expires = 0.0

    async def _give_back(self, lease: Lease) -> None:
        if self.remote is None or lease.credits <= 0:
            return
        try:
            refunds = [replace(b, refund=lease.credits) for b in lease.buckets]
            await self.remote.run("charge", refunds)
        except LimiterBackendError:
            log.debug("leased requests not given back: the store is unreachable")

    async def _sweep(self) -> None:
        """Give back the unused credits of expired leases; ends when no lease is left."""
        try:
            while self._leases:
                await asyncio.sleep(self.LEASE_SECONDS)
                now = time.monotonic()
                expired = [who for who, lease in self._leases.items() if lease.expires <= now]
                for who in expired:
                    # A check may have taken it over while an earlier one was given back.
                    lease = self._leases.get(who)
                    if lease is not None and lease.expires <= now:
                        del self._leases[who]
                        await self._give_back(lease)
        finally:
            self._sweeper = None

    async def close(self) -> None:
        """Give back every unused leased request (a replica going away)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        leases, self._leases = list(self._leases.values()), {}
        for lease in leases:
            await self._give_back(lease)


class TenantLimitSource:
    """Per-tenant overrides from the database, cached briefly in process; a change is
    announced to the other processes (``invalidations``), which drop their entry."""

    CACHE_SECONDS = 10.0
    SWEEP_SECONDS = 60.0

    def __init__(self, load: TenantLimitLoader, invalidations: Invalidations | None = None) -> None:
        self._load = load
        # One entry per tenant that made a request within CACHE_SECONDS: older entries are
        # swept every SWEEP_SECONDS (tenants come from verified credentials, but a token
        # issuer may name many of them over time).
        self._cache: dict[str, tuple[float, tuple[int | None, int | None] | None]] = {}
        self._next_sweep = 0.0
        self.invalidations = invalidations
        if invalidations is not None:
            invalidations.on("tenant-limits", self._drop, self._cache.clear)

    def __len__(self) -> int:
        return len(self._cache)

    def sweep(self, now: float) -> None:
        """Drop the entries older than CACHE_SECONDS (in place: the invalidation reset
        holds ``self._cache.clear``)."""
        self._next_sweep = now + self.SWEEP_SECONDS
        for tenant in [t for t, (at, _) in self._cache.items() if now - at >= self.CACHE_SECONDS]:
            del self._cache[tenant]

    async def get(self, tenant_id: str) -> tuple[int | None, int | None] | None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self.sweep(now)
        cached = self._cache.get(tenant_id)
        if cached is not None and now - cached[0] < self.CACHE_SECONDS:
            return cached[1]
        value = await self._load(tenant_id)
        self._cache[tenant_id] = (now, value)
        return value

    def forget(self, tenant_id: str) -> None:
        """Drop the tenant's entry here and in every other process."""
        self._drop(tenant_id)
        if self.invalidations is not None:
            self.invalidations.announce("tenant-limits", tenant_id)

    def _drop(self, tenant_id: str) -> None:
        self._cache.pop(tenant_id, None)
