"""Token accounting: each call's tokens go to the metrics, the token-per-minute budgets and
a usage record in the database (written off the request path)."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aimesh_gateway.auth.security import Principal
from aimesh_gateway.core.background import Background
from aimesh_gateway.db.models import UsageRecord, utcnow
from aimesh_gateway.limits.ratelimit import RateLimiter
from aimesh_gateway.observability.metrics import HttpMetrics

log = logging.getLogger("aimesh.gateway.usage")


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
        self._writes.spawn(self._write(row))

    async def _write(self, row: UsageRecord) -> None:
        try:
            async with self.sessions.begin() as session:
                session.add(row)
        except SQLAlchemyError as error:
            log.warning("could not store a usage record: %s", type(error).__name__)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` off the request path, also when the request's task is cancelled:
        what a call that ended early spent is recorded (and its budget settled) this way."""
        self._writes.spawn(work)

    async def drain(self) -> None:
        """Wait for the records still being written (at shutdown)."""
        await self._writes.drain()
