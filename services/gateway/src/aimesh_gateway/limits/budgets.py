"""Budgets in money: reserve a call's largest possible cost before it, settle after.

A budget caps what one API key, one user or a whole tenant may spend (optionally on one model
alias) over a calendar day or month (UTC) or a rolling window. Before a call the gateway
reserves its largest possible cost (the counted prompt tokens at the input price plus
``max_tokens``, or the alias's cap, at the output price; the dearest alias of its fallback
chain) against every budget that applies, in ONE Redis script: a hard budget refuses when
``spent + reserved in flight + this call > limit``, so replicas sharing Redis never let
calls together spend past it, and never refuse while the budget minus the reservations in
flight still covers the call. After the call the reservation is settled to the real cost
(the router's ``cost_usd``) and the rest released. A replica that dies mid-call leaves a
reservation that expires after the request timeout.

Amounts are integers in millionths of a dollar (micros). Spend per window lives in a Redis
hash of time buckets (one bucket for a calendar window; about a hundred for a rolling one)
marked ``_seeded`` once it holds the SQL truth: after a Redis restart or flush the mark is
gone and the next reservation rebuilds the window's spend from the usage records first, so
a budget is never silently reset. Without Redis the same logic runs in process (one worker).
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import HTTPException
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.auth.security import Principal
from aimesh_gateway.core.background import Background
from aimesh_gateway.core.config import Settings
from aimesh_gateway.core.invalidation import Invalidations
from aimesh_gateway.db.models import Budget, UsageRecord
from aimesh_gateway.observability.metrics import HttpMetrics

log = logging.getLogger("aimesh.gateway.budgets")

MICROS = 1_000_000
SEEDED = "_seeded"
# After a Redis failure, skip Redis for this long (an outage costs no per-request timeout).
REDIS_RETRY_SECONDS = 1.0
# Reservations outlive the request timeout by this much before they expire.
RESERVATION_GRACE_MS = 30_000
# A rolling window is kept in about this many time buckets (at least a minute each).
ROLLING_BUCKETS = 100
# A reservation's prompt tokens when the router fills the prompt (retrieved sources packed
# into the alias's context window): the whole window.
FILL_CONTEXT = -1

# KEYS: per budget: spend hash, held counter, reservations zset. ARGV: now (ms), reservation
# id, its expiry (ms), then per budget: limit, window start (s), amount, hard (1/0).
# Returns {-1, i...} when budgets i need seeding; else {ok, refused budget index (0: none),
# then per budget: spent, held (before this call), oldest counted bucket (s, -1: none)}.
RESERVE_SCRIPT = """
local now = tonumber(ARGV[1])
local id = ARGV[2]
local expires = tonumber(ARGV[3])
local n = #KEYS / 3
local unseeded = {-1}
for i = 1, n do
  if redis.call('HEXISTS', KEYS[3 * i - 2], '_seeded') == 0 then
    unseeded[#unseeded + 1] = i
  end
end
if #unseeded > 1 then return unseeded end
local spent, held, oldest = {}, {}, {}
local refused = 0
for i = 1, n do
  local b = 4 * (i - 1) + 3
  local limit = tonumber(ARGV[b + 1])
  local start = tonumber(ARGV[b + 2])
  local amount = tonumber(ARGV[b + 3])
  local hk, rk = KEYS[3 * i - 1], KEYS[3 * i]
  local gone = redis.call('ZRANGEBYSCORE', rk, '-inf', now)
  if #gone > 0 then
    local total = 0
    for _, m in ipairs(gone) do total = total + tonumber(string.match(m, ':(%d+)$')) end
    redis.call('DECRBY', hk, total)
    redis.call('ZREMRANGEBYSCORE', rk, '-inf', now)
  end
  local fields = redis.call('HGETALL', KEYS[3 * i - 2])
  local s, old = 0, -1
  for j = 1, #fields, 2 do
    if fields[j] ~= '_seeded' then
      local t = tonumber(fields[j])
      if t < start then
        redis.call('HDEL', KEYS[3 * i - 2], fields[j])
      else
        s = s + tonumber(fields[j + 1])
        if old < 0 or t < old then old = t end
      end
    end
  end
  local h = math.max(0, tonumber(redis.call('GET', hk) or '0'))
  spent[i], held[i], oldest[i] = s, h, old
  if ARGV[b + 4] == '1' and refused == 0 and s + h + amount > limit then refused = i end
end
local out = {refused == 0 and 1 or 0, refused}
for i = 1, n do
  if refused == 0 then
    local amount = tonumber(ARGV[4 * (i - 1) + 6])
    local hk, rk = KEYS[3 * i - 1], KEYS[3 * i]
    redis.call('INCRBY', hk, amount)
    redis.call('ZADD', rk, expires, id .. ':' .. amount)
    redis.call('PEXPIRE', hk, expires - now + 60000)
    redis.call('PEXPIRE', rk, expires - now + 60000)
  end
  out[#out + 1] = spent[i]
  out[#out + 1] = held[i]
  out[#out + 1] = oldest[i]
end
return out
"""

# KEYS as above. ARGV: reservation id, then per budget: amount reserved, cost, bucket (s),
# spend key ttl (ms), window start (s). Returns the spend of each budget's window after it.
SETTLE_SCRIPT = """
local id = ARGV[1]
local n = #KEYS / 3
local out = {}
for i = 1, n do
  local b = 5 * (i - 1) + 1
  local amount = ARGV[b + 1]
  local cost = tonumber(ARGV[b + 2])
  local start = tonumber(ARGV[b + 5])
  local sk, hk, rk = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  if redis.call('ZREM', rk, id .. ':' .. amount) == 1 then
    redis.call('DECRBY', hk, tonumber(amount))
  end
  if cost > 0 then
    redis.call('HINCRBY', sk, ARGV[b + 3], cost)
    redis.call('PEXPIRE', sk, tonumber(ARGV[b + 4]))
  end
  local fields = redis.call('HGETALL', sk)
  local s = 0
  for j = 1, #fields, 2 do
    if fields[j] ~= '_seeded' and tonumber(fields[j]) >= start then
      s = s + tonumber(fields[j + 1])
    end
  end
  out[i] = s
end
return out
"""

# KEYS[1]: a spend hash. ARGV: ttl (ms), then bucket, micros pairs from SQL. Only a hash not
# seeded yet is (re)written: another replica may have seeded it meanwhile.
SEED_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], '_seeded') == 1 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_seeded', '1')
for j = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[j], tonumber(ARGV[j + 1])) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""


def to_micros(usd: float) -> int:
    return max(0, round(usd * MICROS))


@dataclass(frozen=True)
class Window:
    """A budget's current window: counted buckets start at ``start``; a settled cost goes
    into ``bucket``; calendar windows end (and reset) at ``end`` (rolling: 0)."""

    start: int
    bucket: int
    end: int
    key: str  # the spend hash's name part: the start of a calendar window, "r" rolling
    width: int  # a bucket's seconds (rolling), 0 calendar


def window_of(budget: Budget, now: float) -> Window:
    moment = datetime.fromtimestamp(now, UTC)
    if budget.period == "day":
        start = int(datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp())
        return Window(start, start, start + 86_400, str(start), 0)
    if budget.period == "month":
        first = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        days = calendar.monthrange(moment.year, moment.month)[1]
        start = int(first.timestamp())
        return Window(start, start, start + days * 86_400, str(start), 0)
    width = max(60, budget.rolling_seconds // ROLLING_BUCKETS)
    bucket = int(now) // width * width
    return Window(bucket - budget.rolling_seconds + width, bucket, 0, "r", width)


def window_label(budget: Budget) -> str:
    if budget.period == "rolling":
        return f"rolling {budget.rolling_seconds}s"
    return budget.period


@dataclass(frozen=True)
class Quote:
    """What the gateway knows of an alias's prices (the dearest of its fallback chain)."""

    alias: str
    priced: bool
    input_per_1k: float
    output_per_1k: float
    max_tokens: int
    context_window: int

    def cost_micros(self, prompt_tokens: int, completion_tokens: int) -> int:
        usd = (prompt_tokens * self.input_per_1k + completion_tokens * self.output_per_1k) / 1000
        return math.ceil(usd * MICROS)


ModelLister = Callable[[], Awaitable[llm_pb2.ListModelsResponse]]


class PriceBook:
    """The aliases' prices, token caps and fallback chains, from the router's ListModels,
    cached for ``ttl`` seconds (an unknown alias refreshes at once)."""

    def __init__(self, list_models: ModelLister, ttl: float = 30.0) -> None:
        self._list = list_models
        self._ttl = ttl
        self._models: dict[str, llm_pb2.ModelInfo] = {}
        self._defaults: dict[str, str] = {}
        self._fetched = -math.inf
        self._lock = asyncio.Lock()

    async def _refresh(self, force: bool = False) -> None:
        async with self._lock:
            if not force and time.monotonic() - self._fetched < self._ttl:
                return
            reply = await self._list()
            self._models = {model.id: model for model in reply.models}
            self._defaults = {task: m.id for m in reply.models for task in m.default_for}
            self._fetched = time.monotonic()

    async def quote(self, alias: str, task: str) -> Quote | None:
        """The quote of ``alias`` (or the task's default alias); None for an unknown alias
        (the router then answers 404 itself)."""
        await self._refresh()
        name = alias or self._defaults.get(task, "default")
        if name not in self._models:
            await self._refresh(force=True)
            if name not in self._models:
                return None
        chain: list[llm_pb2.ModelInfo] = []
        pending = [name]
        while pending:
            current = self._models.get(pending.pop(0))
            if current is None or current in chain:
                continue
            chain.append(current)
            pending.extend(current.fallbacks)
        first = chain[0]
        return Quote(
            alias=name,
            priced=all(m.priced for m in chain),
            input_per_1k=max(m.price_per_1k_input for m in chain),
            output_per_1k=max(m.price_per_1k_output for m in chain),
            max_tokens=max(m.max_tokens for m in chain) or 1024,
            context_window=first.context_window or 4096,
        )


class BudgetList:
    """A tenant's budgets from the database, cached briefly; changes are announced to the
    other processes, which drop their entry."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cache_seconds: float,
        invalidations: Invalidations | None = None,
    ) -> None:
        self.sessions = sessions
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, list[Budget]]] = {}
        self.invalidations = invalidations
        if invalidations is not None:
            invalidations.on("budgets", self._drop, self._cache.clear)

    async def of_tenant(self, tenant_id: str) -> list[Budget]:
        cached = self._cache.get(tenant_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        async with self.sessions() as session:
            rows = list(
                (await session.scalars(select(Budget).where(Budget.tenant_id == tenant_id))).all()
            )
        self._cache[tenant_id] = (now, rows)
        return rows

    def forget(self, tenant_id: str) -> None:
        self._drop(tenant_id)
        if self.invalidations is not None:
            self.invalidations.announce("budgets", tenant_id)

    def _drop(self, tenant_id: str) -> None:
        self._cache.pop(tenant_id, None)


def applies(budget: Budget, principal: Principal, alias: str) -> bool:
    if budget.model and budget.model != alias:
        return False
    if budget.scope == "tenant":
        return True
    return budget.subject == principal.subject


def budget_subject(scope: str, subject: str) -> str:
    """The principal subject a key or user budget matches (keys are ``key:<id>``)."""
    if scope == "key":
        return subject if subject.startswith("key:") else f"key:{subject}"
    return subject if scope == "user" else ""


class BudgetExceeded(HTTPException):
    """429 with code ``budget_exceeded``, the budget's scope and window, and Retry-After."""

    def __init__(
        self, budget: Budget, retry_after: int, spent: int, held: int, amount: int
    ) -> None:
        window = window_label(budget)
        super().__init__(
            429,
            f"budget exceeded: the {budget.scope} budget of {budget.limit_micros / MICROS:g} USD "
            f"per {window} (id {budget.id}) cannot cover this call's largest possible cost; "
            "retry after the window resets (Retry-After)",
            headers={"Retry-After": str(max(1, retry_after))},
        )
        self.extra: dict[str, Any] = {
            "code": "budget_exceeded",
            "budget_id": budget.id,
            "scope": budget.scope,
            "window": window,
            "limit_usd": budget.limit_micros / MICROS,
            "spent_usd": spent / MICROS,
            "reserved_usd": held / MICROS,
            "call_usd": amount / MICROS,
        }


class BudgetStoreUnavailable(Exception):
    pass


@dataclass
class _Applied:
    budget: Budget
    window: Window
    amount: int


class Budgets:
    """Reservation and settlement against every budget that applies to a call."""

    def __init__(
        self,
        settings: Settings,
        metrics: HttpMetrics,
        redis: Redis | None,
        sessions: async_sessionmaker[AsyncSession],
        budgets: BudgetList,
        prices: PriceBook,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.redis = redis
        self.sessions = sessions
        self.budgets = budgets
        self.prices = prices
        self.prefix = f"{settings.redis_key_prefix}bg:"
        self.local = _LocalStore(self)
        if redis is not None:
            self._reserve = redis.register_script(RESERVE_SCRIPT)
            self._settle = redis.register_script(SETTLE_SCRIPT)
            self._seed = redis.register_script(SEED_SCRIPT)
        self._redis_down_until = 0.0
        # Spend hashes that missed settlements while Redis was unreachable: reseeded from the
        # usage records (which have them) at the next reservation that reaches Redis.
        self._stale: set[str] = set()
        self.webhook = (
            BudgetWebhook(settings, metrics) if settings.budget_webhook_url is not None else None
        )

    @property
    def degraded(self) -> bool:
        """Redis is configured but was unreachable at the last try (policy applied)."""
        return self.redis is not None and time.monotonic() < self._redis_down_until

    def keys(self, budget: Budget, window: Window) -> list[str]:
        base = f"{self.prefix}{budget.id}"
        return [f"{base}:s:{window.key}", f"{base}:held", f"{base}:resv"]

    async def reserve(
        self,
        principal: Principal,
        alias: str,
        task: str,
        prompt_tokens: int,
        max_tokens: int = 0,
    ) -> Hold | None:
        """Reserve the call's largest possible cost against every budget that applies; None
        when none does. Raises BudgetExceeded (429), 403 for an unpriced alias under a hard
        budget, 503 when Redis is down and the policy is fail-closed."""
        try:
            budgets = await self.budgets.of_tenant(principal.tenant_id)
        except SQLAlchemyError:
            raise HTTPException(
                503,
                "budgets cannot be read: the database is unreachable; retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        if not budgets:
            return None
        quote = await self.prices.quote(alias, task)
        if quote is None:
            return None  # an unknown alias: the router answers 404 without spending
        applied_budgets = [b for b in budgets if applies(b, principal, quote.alias)]
        if not applied_budgets:
            return None
        hard = [b for b in applied_budgets if b.mode == "hard"]
        if hard and not quote.priced:
            raise HTTPException(
                403,
                f"model {quote.alias!r} (or one of its fallbacks) has no prices configured, "
                f"and the hard {hard[0].scope} budget {hard[0].id} applies: a call to it "
                "cannot be billed, so it is refused (set price_per_1k_input and "
                "price_per_1k_output in the models file)",
            )
        completion = min(max_tokens, quote.max_tokens) if max_tokens else quote.max_tokens
        if prompt_tokens == FILL_CONTEXT:
            prompt = quote.context_window
        else:
            prompt = math.ceil(prompt_tokens * self.settings.budget_prompt_margin)
        amount = quote.cost_micros(prompt, completion)
        now = time.time()
        applied = [_Applied(b, window_of(b, now), amount) for b in applied_budgets]
        hold = Hold(self, uuid.uuid4().hex, applied, quote, principal)
        try:
            if self.redis is None:
                verdict = await self.local.reserve(hold, now)
            else:
                verdict = await self._reserve_remote(hold, now)
        except BudgetStoreUnavailable:
            self.metrics.budget_store_errors.inc()
            if hard and self.settings.budget_redis_failure == "closed":
                raise HTTPException(
                    503,
                    "budgets cannot be checked: the shared store is unreachable; retry shortly",
                    headers={"Retry-After": "1"},
                ) from None
            hold.unchecked = True
            self._stale.update(self.keys(i.budget, i.window)[0] for i in applied)
            return hold
        refused, spent, held, oldest = verdict
        for item, total in zip(applied, spent, strict=True):
            self._observe(item.budget, total)
        if refused:
            item = applied[refused - 1]
            self.metrics.rate_limited.labels("budget", item.budget.scope).inc()
            raise BudgetExceeded(
                item.budget,
                self._retry_after(item, oldest[refused - 1], now),
                spent[refused - 1],
                held[refused - 1],
                item.amount,
            )
        return hold

    def _retry_after(self, item: _Applied, oldest: int, now: float) -> int:
        if item.window.end:
            return math.ceil(item.window.end - now)
        if oldest < 0:
            return item.window.width
        return math.ceil(oldest + item.budget.rolling_seconds - now)

    async def _reserve_remote(
        self, hold: Hold, now: float
    ) -> tuple[int, list[int], list[int], list[int]]:
        if time.monotonic() < self._redis_down_until:
            raise BudgetStoreUnavailable()
        now_ms = int(now * 1000)
        expires = now_ms + int(self.settings.request_timeout_seconds * 1000) + RESERVATION_GRACE_MS
        keys: list[str] = []
        args: list[int | str] = [now_ms, hold.id, expires]
        for item in hold.applied:
            keys += self.keys(item.budget, item.window)
            hard = 1 if item.budget.mode == "hard" else 0
            args += [item.budget.limit_micros, item.window.start, item.amount, hard]
        for _ in range(3):
            try:
                if self._stale and self.redis is not None:
                    stale, self._stale = self._stale, set()
                    for key in stale:
                        await self.redis.hdel(key, SEEDED)
                reply = [int(v) for v in await self._reserve(keys=keys, args=args)]
            except RedisError as error:
                self._down(error)
                raise BudgetStoreUnavailable() from error
            if reply[0] != -1:
                rest = reply[2:]
                return reply[1], rest[0::3], rest[1::3], rest[2::3]
            for index in reply[1:]:
                item = hold.applied[index - 1]
                await self._seed_remote(item, now)
        raise BudgetStoreUnavailable()

    async def _seed_remote(self, item: _Applied, now: float) -> None:
        buckets = await self.spent_in_sql(item.budget, item.window, now)
        args: list[int | str] = [self._ttl_ms(item, now)]
        for bucket, micros in buckets.items():
            args += [bucket, micros]
        key = self.keys(item.budget, item.window)[0]
        try:
            await self._seed(keys=[key], args=args)
        except RedisError as error:
            self._down(error)
            raise BudgetStoreUnavailable() from error
        log.info("budget spend rebuilt from usage records", extra={"budget": item.budget.id})

    def _ttl_ms(self, item: _Applied, now: float) -> int:
        if item.window.end:
            return int((item.window.end - now) * 1000) + 3_600_000
        return (item.budget.rolling_seconds + 3600) * 1000

    def _down(self, error: Exception) -> None:
        self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        log.warning(
            "budget store unreachable (%s); hard budgets fail %s",
            type(error).__name__,
            self.settings.budget_redis_failure,
        )

    async def spent_in_sql(self, budget: Budget, window: Window, now: float) -> dict[int, int]:
        """The budget's spend in ``window`` from the usage records, per bucket: each row's
        ``cost_usd`` converted as a settlement converts it (:func:`to_micros`), so the
        rebuilt spend is exactly the sum of what was settled."""
        since = datetime.fromtimestamp(window.start, UTC)
        query = select(UsageRecord.created_at, UsageRecord.cost_usd).where(
            UsageRecord.tenant_id == budget.tenant_id,
            UsageRecord.created_at >= since,
            UsageRecord.cost_usd > 0,
        )
        if budget.scope != "tenant":
            query = query.where(UsageRecord.subject == budget.subject)
        if budget.model:
            query = query.where(UsageRecord.model == budget.model)
        buckets: dict[int, int] = {}
        async with self.sessions() as session:
            for created, cost_usd in (await session.execute(query)).all():
                stamp = int(created.timestamp())
                bucket = stamp // window.width * window.width if window.width else window.start
                buckets[bucket] = buckets.get(bucket, 0) + to_micros(cost_usd)
        return buckets

    async def settle(self, hold: Hold, cost_micros: int) -> None:
        if hold.unchecked:
            return
        now = time.time()
        try:
            if self.redis is None:
                totals = self.local.settle(hold, cost_micros, now)
            else:
                totals = await self._settle_remote(hold, cost_micros, now)
        except BudgetStoreUnavailable:
            # The usage record still carries the cost: the window is rebuilt from the usage
            # records at the next reservation that reaches Redis.
            self.metrics.budget_store_errors.inc()
            self._stale.update(
                self.keys(i.budget, window_of(i.budget, now))[0] for i in hold.applied
            )
            return
        for item, total in zip(hold.applied, totals, strict=True):
            self._observe(item.budget, total)
            self._alert(item.budget, total - cost_micros, total)

    async def _settle_remote(self, hold: Hold, cost: int, now: float) -> list[int]:
        keys: list[str] = []
        args: list[int | str] = [hold.id]
        for item in hold.applied:
            keys += self.keys(item.budget, window_of(item.budget, now))
            window = window_of(item.budget, now)
            args += [item.amount, cost, window.bucket, self._ttl_ms(item, now), window.start]
        try:
            return [int(v) for v in await self._settle(keys=keys, args=args)]
        except RedisError as error:
            self._down(error)
            raise BudgetStoreUnavailable() from error

    def _observe(self, budget: Budget, spent: int) -> None:
        self.metrics.budget_spend_ratio.labels(
            budget.id, budget.tenant_id, budget.scope, window_label(budget), budget.mode
        ).set(spent / budget.limit_micros if budget.limit_micros else 0.0)

    def _alert(self, budget: Budget, before: int, after: int) -> None:
        for threshold in self.settings.budget_alert_thresholds:
            mark = budget.limit_micros * threshold / 100
            if before < mark <= after:
                self.metrics.budget_alerts.labels(str(threshold), budget.scope, budget.mode).inc()
                log.warning(
                    "budget crossed an alert threshold",
                    extra={"budget": budget.id, "threshold": threshold, "tenant": budget.tenant_id},
                )
                if self.webhook is not None:
                    self.webhook.send(budget, threshold, after)

    async def forecast(self, budget: Budget) -> dict[str, Any]:
        """Spend of the budget's current window (SQL truth), in-flight reservations (Redis)
        and the window's forecast at the pace so far (calendar windows)."""
        now = time.time()
        window = window_of(budget, now)
        spent = sum((await self.spent_in_sql(budget, window, now)).values())
        reserved = 0
        if self.redis is not None:
            try:
                reserved = max(0, int(await self.redis.get(f"{self.prefix}{budget.id}:held") or 0))
            except RedisError:
                reserved = 0
        else:
            reserved = self.local.held.get(budget.id, 0)
        if window.end:
            elapsed = max(now - window.start, 60.0)
            projected = spent * (window.end - window.start) / elapsed
            resets = datetime.fromtimestamp(window.end, UTC)
        else:
            projected = float(spent)
            resets = None
        return {
            "spent_usd": spent / MICROS,
            "reserved_usd": reserved / MICROS,
            "forecast_usd": round(projected / MICROS, 6),
            "window_start": datetime.fromtimestamp(window.start, UTC),
            "window_end": resets,
            "percent": round(100 * spent / budget.limit_micros, 2) if budget.limit_micros else 0,
        }

    async def reset_counters(self, budget: Budget) -> None:
        """Drop the Redis state of a changed or deleted budget (the next call rebuilds it)."""
        if self.redis is None:
            self.local.forget(budget.id)
            return
        try:
            pattern = f"{self.prefix}{budget.id}:*"
            keys = [key async for key in self.redis.scan_iter(match=pattern, count=100)]
            if keys:
                await self.redis.delete(*keys)
        except RedisError as error:
            log.warning("could not drop a budget's counters: %s", type(error).__name__)


@dataclass
class Hold:
    """One call's reservation; settle it once (a second settle is a no-op)."""

    budgets: Budgets
    id: str
    applied: list[_Applied]
    quote: Quote
    principal: Principal
    unchecked: bool = False
    settled: bool = field(default=False)

    async def settle(self, cost_usd: float) -> None:
        if self.settled:
            return
        self.settled = True
        await self.budgets.settle(self, to_micros(cost_usd))

    async def release(self) -> None:
        """Nothing was spent (the call failed before the model answered)."""
        await self.settle(0.0)


class _LocalStore:
    """The in-process store (no Redis: one worker); seeded from SQL on first use."""

    def __init__(self, owner: Budgets) -> None:
        self.owner = owner
        self.spend: dict[tuple[str, str], dict[int, int]] = {}
        self.held: dict[str, int] = {}
        self.holds: dict[str, dict[str, int]] = {}  # budget id -> reservation id -> amount
        self._lock = asyncio.Lock()

    def forget(self, budget_id: str) -> None:
        for key in [key for key in self.spend if key[0] == budget_id]:
            del self.spend[key]

    async def reserve(self, hold: Hold, now: float) -> tuple[int, list[int], list[int], list[int]]:
        async with self._lock:
            spent, held, oldest = [], [], []
            refused = 0
            for index, item in enumerate(hold.applied, start=1):
                key = (item.budget.id, item.window.key)
                if key not in self.spend:
                    self.spend[key] = await self.owner.spent_in_sql(item.budget, item.window, now)
                buckets = self.spend[key]
                for bucket in [b for b in buckets if b < item.window.start]:
                    del buckets[bucket]
                total = sum(buckets.values())
                in_flight = self.held.get(item.budget.id, 0)
                spent.append(total)
                held.append(in_flight)
                oldest.append(min(buckets, default=-1))
                over = total + in_flight + item.amount > item.budget.limit_micros
                if item.budget.mode == "hard" and not refused and over:
                    refused = index
            if not refused:
                for item in hold.applied:
                    self.held[item.budget.id] = self.held.get(item.budget.id, 0) + item.amount
                    self.holds.setdefault(item.budget.id, {})[hold.id] = item.amount
            return refused, spent, held, oldest

    def settle(self, hold: Hold, cost: int, now: float) -> list[int]:
        totals = []
        for item in hold.applied:
            amount = self.holds.get(item.budget.id, {}).pop(hold.id, None)
            if amount is not None:
                self.held[item.budget.id] = self.held.get(item.budget.id, 0) - amount
            window = window_of(item.budget, now)
            buckets = self.spend.setdefault((item.budget.id, window.key), {})
            buckets[window.bucket] = buckets.get(window.bucket, 0) + cost
            totals.append(sum(v for b, v in buckets.items() if b >= window.start))
        return totals


class BudgetWebhook:
    """POSTs budget alerts to the configured URL, signed (``X-Aimesh-Signature:
    sha256=<hex HMAC of the body>``), retried with backoff, in the background: the request
    that crossed the threshold never waits for it."""

    ATTEMPTS = 4

    def __init__(self, settings: Settings, metrics: HttpMetrics) -> None:
        assert settings.budget_webhook_url is not None
        assert settings.budget_webhook_secret is not None
        self.url = settings.budget_webhook_url
        self.secret = settings.budget_webhook_secret.get_secret_value().encode()
        self.metrics = metrics
        self.background = Background()
        self.backoff = 0.5

    def send(self, budget: Budget, threshold: int, spent: int) -> None:
        body = {
            "event": "budget.threshold",
            "budget_id": budget.id,
            "tenant_id": budget.tenant_id,
            "scope": budget.scope,
            "subject": budget.subject,
            "model": budget.model,
            "window": window_label(budget),
            "mode": budget.mode,
            "threshold_percent": threshold,
            "limit_usd": budget.limit_micros / MICROS,
            "spent_usd": spent / MICROS,
            "at": datetime.now(UTC).isoformat(),
        }
        self.background.spawn(self._deliver(json.dumps(body, separators=(",", ":")).encode()))

    def signature(self, payload: bytes) -> str:
        return "sha256=" + hmac.new(self.secret, payload, hashlib.sha256).hexdigest()

    async def _deliver(self, payload: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            "X-Aimesh-Signature": self.signature(payload),
        }
        async with httpx.AsyncClient(timeout=5.0) as client:
            for attempt in range(self.ATTEMPTS):
                try:
                    response = await client.post(self.url, content=payload, headers=headers)
                    if response.status_code < 300:
                        self.metrics.budget_webhooks.labels("sent").inc()
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(self.backoff * 2**attempt)
        self.metrics.budget_webhooks.labels("failed").inc()
        log.warning("budget webhook failed after %d attempts", self.ATTEMPTS)

    async def drain(self) -> None:
        await self.background.drain()
