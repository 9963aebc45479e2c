"""Feedback on answers, tied to the usage record the answering request left.

A usage record carries the request id, route, model, provider and prompt version of each
answer (/v1/ask, /v1/summarize, /v1/chat/completions, conversation messages); feedback
copies them, so summaries group ratings by what produced the answers without a join.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aimesh_gateway.auth.security import Principal
from aimesh_gateway.db.models import Feedback, UsageRecord, utcnow
from aimesh_gateway.stores.usage import UsageMeter

# Route templates whose usage records are answers that can be rated.
ANSWER_ROUTES = frozenset(
    {
        "/v1/ask",
        "/v1/summarize",
        "/v1/chat/completions",
        "/v1/conversations/{conversation_id}/messages",
    }
)


class UnknownAnswer(LookupError):
    """The request id names no answer of the caller's tenant."""


@dataclass(frozen=True)
class SummaryRow:
    route: str
    model: str
    provider: str
    prompt_version: str
    count: int
    up: int
    down: int

    @property
    def score(self) -> float:
        return (self.up - self.down) / self.count if self.count else 0.0


class FeedbackStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], meter: UsageMeter) -> None:
        self.sessions = sessions
        self.meter = meter

    async def _answer(self, tenant_id: str, request_id: str) -> UsageRecord | None:
        async with self.sessions() as session:
            query = (
                select(UsageRecord)
                .where(
                    UsageRecord.request_id == request_id,
                    UsageRecord.tenant_id == tenant_id,
                    UsageRecord.route.in_(ANSWER_ROUTES),
                )
                .order_by(UsageRecord.id.desc())
                .limit(1)
            )
            return (await session.scalars(query)).first()

    async def answer(self, tenant_id: str, request_id: str) -> UsageRecord:
        """The usage record of the answer; UnknownAnswer when there is none in the tenant."""
        record = await self._answer(tenant_id, request_id)
        if record is None:
            # Usage records are written off the request path: a rating sent right after
            # the answer may arrive before its record. Wait for pending writes once.
            await self.meter.drain()
            record = await self._answer(tenant_id, request_id)
        if record is None:
            raise UnknownAnswer(request_id)
        return record

    async def rate(
        self, principal: Principal, request_id: str, rating: int, comment: str | None
    ) -> tuple[Feedback, bool]:
        """Store the subject's rating of the answer; ``(row, created)``. A second rating
        of the same answer by the same subject replaces the first."""
        answer = await self.answer(principal.tenant_id, request_id)
        for _ in range(2):  # a concurrent first rating makes the insert fail once
            async with self.sessions.begin() as session:
                existing = (
                    await session.scalars(
                        select(Feedback).where(
                            Feedback.tenant_id == principal.tenant_id,
                            Feedback.request_id == request_id,
                            Feedback.subject == principal.subject,
                        )
                    )
                ).first()
                if existing is not None:
                    existing.rating = rating
                    existing.comment = comment
                    return existing, False
            try:
                row = Feedback(
                    id=uuid.uuid4().hex,
                    tenant_id=principal.tenant_id,
                    subject=principal.subject,
                    request_id=request_id,
                    rating=rating,
                    comment=comment,
                    route=answer.route,
                    model=answer.model,
                    provider=answer.provider,
                    prompt_version=answer.prompt_version,
                    created_at=utcnow(),
                )
                async with self.sessions.begin() as session:
                    session.add(row)
                return row, True
            except IntegrityError:
                continue
        raise RuntimeError("feedback could not be stored")  # pragma: no cover

    async def recent(self, tenant_id: str, rating: int | None, limit: int) -> list[Feedback]:
        """The tenant's feedback, newest first."""
        query = select(Feedback).where(Feedback.tenant_id == tenant_id)
        if rating is not None:
            query = query.where(Feedback.rating == rating)
        query = query.order_by(Feedback.created_at.desc(), Feedback.id.desc()).limit(limit)
        async with self.sessions() as session:
            return list((await session.scalars(query)).all())

    async def summary(self, tenant_id: str) -> list[SummaryRow]:
        """Ratings per route, model, provider and prompt version; most rated first."""
        up = func.sum(case((Feedback.rating > 0, 1), else_=0))
        down = func.sum(case((Feedback.rating < 0, 1), else_=0))
        count = func.count(Feedback.id)
        keys = (Feedback.route, Feedback.model, Feedback.provider, Feedback.prompt_version)
        query = (
            select(*keys, count, up, down)
            .where(Feedback.tenant_id == tenant_id)
            .group_by(*keys)
            .order_by(count.desc(), *keys)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            SummaryRow(
                route=row[0],
                model=row[1],
                provider=row[2],
                prompt_version=row[3],
                count=int(row[4]),
                up=int(row[5] or 0),
                down=int(row[6] or 0),
            )
            for row in rows
        ]
