"""Token accounting: each call's tokens go to the metrics, the token-per-minute budgets and
a usage record in the database (written off the request path).

Records are written by one writer task at a time, each transaction taking every record that
is waiting (up to ``WRITE_BATCH``): one at a time when calls are few, hundreds per commit
under load, where a transaction per record cost the gateway a fifth of its CPU (SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aimesh_gateway.auth.security import Principal
from aimesh_gateway.core.background import Background
from aimesh_gateway.db.models import UsageRecord, utcnow
from aimesh_gateway.limits.ratelimit import RateLimiter
from aimesh_gateway.observability.metrics import HttpMetrics

log = logging.getLogger("aimesh.gateway.usage")

WRITE_BATCH = 500  # records per transaction at most
DELETE_BATCH = 5_000  # old records deleted per transaction by retention


@dataclass(frozen=True)
class Spent:
    """What a call that ended early had spent, with what it ran on."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    cost_usd: float
    provider: str = ""
    prompt_version: str = ""


class UsageMeter:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        limiter: RateLimiter,
        metrics: HttpMetrics,
    ) -> None:
        self.sessions = sessions
        self.limiter = limiter
        self.metrics = metrics
        self._writes = Background()
        self._pending: list[UsageRecord] = []
        self._writing = False

    async def record(
        self,
        principal: Principal,
        route: str,
        model: str,
        prompt: int,
        completion: int,
        *,
        request_id: str = "",
        provider: str = "",
        prompt_version: str = "",
        estimated: bool = False,
        cost_usd: float = 0.0,
    ) -> None:
        self.metrics.tokens.labels("prompt").inc(max(prompt, 0))
        self.metrics.tokens.labels("completion").inc(max(completion, 0))
        await self.limiter.charge(principal, prompt + completion)
        row = UsageRecord(
            tenant_id=principal.tenant_id,
            subject=principal.subject,
            route=route,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            created_at=utcnow(),
            request_id=request_id,
            provider=provider,
            prompt_version=prompt_version,
            estimated=estimated,
            cost_usd=max(cost_usd, 0.0),
        )
        self._pending.append(row)
        if not self._writing:
            self._writing = True
            self._writes.spawn(self._write())

    async def _write(self) -> None:
        """Write what is waiting, batch after batch, until nothing is."""
        try:
            while self._pending:
                rows = self._pending[:WRITE_BATCH]
                del self._pending[:WRITE_BATCH]
                try:
                    async with self.sessions.begin() as session:
                        session.add_all(rows)
                except SQLAlchemyError as error:
                    log.warning(
                        "could not store %d usage records: %s", len(rows), type(error).__name__
                    )
        finally:
            self._writing = False

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` off the request path, also when the request's task is cancelled:
        what a call that ended early spent is recorded (and its budget settled) this way."""
        self._writes.spawn(work)

    async def drain(self) -> None:
        """Wait for the records still being written (at shutdown)."""
        await self._writes.drain()

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Delete the records created before ``cutoff``, ``DELETE_BATCH`` per transaction (a
        long delete would hold SQLite's write lock); how many were deleted."""
        deleted = 0
        while True:
            async with self.sessions.begin() as session:
                oldest = (
                    select(UsageRecord.id)
                    .where(UsageRecord.created_at < cutoff)
                    .limit(DELETE_BATCH)
                    .scalar_subquery()
                )
                result = await session.execute(
                    delete(UsageRecord).where(UsageRecord.id.in_(oldest))
                )
            count = int(getattr(result, "rowcount", 0) or 0)
            deleted += count
            if count < DELETE_BATCH:
                return deleted


class UsageRetention:
    """Deletes usage records older than ``days``: once ``first_after`` seconds after start,
    then every ``every`` seconds. Each replica runs it; a delete that finds nothing is
    cheap (an index on ``created_at``)."""

    def __init__(
        self, meter: UsageMeter, days: int, *, every: float = 6 * 3600, first_after: float = 60
    ) -> None:
        self._meter = meter
        self._keep = timedelta(days=days)
        self._every = every
        self._first_after = first_after
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        await asyncio.sleep(self._first_after)
        while True:
            try:
                deleted = await self._meter.delete_older_than(utcnow() - self._keep)
            except SQLAlchemyError as error:
                log.warning("usage retention failed: %s", type(error).__name__)
            else:
                if deleted:
                    log.info("usage records past retention deleted", extra={"count": deleted})
            await asyncio.sleep(self._every)
