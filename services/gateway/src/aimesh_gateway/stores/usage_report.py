"""Usage of a tenant over the last days, from the usage records (admin reports)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aimesh_gateway.db.models import UsageRecord


@dataclass(frozen=True)
class UsageRow:
    key: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class UsageSummary:
    by_key: list[UsageRow]
    by_day: list[UsageRow]
    total: UsageRow


def window_start(days: int, now: datetime | None = None) -> datetime:
    """Midnight UTC starting the last ``days`` days (today counts as one)."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    start = today - timedelta(days=days - 1)
    return datetime(start.year, start.month, start.day, tzinfo=UTC)


def _utc_day(dialect: str) -> Any:
    """SQL for the UTC calendar day of a usage record."""
    if dialect == "postgresql":
        return cast(func.timezone("UTC", UsageRecord.created_at), Date)
    return func.date(UsageRecord.created_at)  # SQLite stores UTC text


def _day_text(value: object) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


async def usage_summary(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str, since: datetime
) -> UsageSummary:
    totals = (
        func.count(UsageRecord.id),
        func.coalesce(func.sum(UsageRecord.prompt_tokens), 0),
        func.coalesce(func.sum(UsageRecord.completion_tokens), 0),
    )
    scope = (UsageRecord.tenant_id == tenant_id, UsageRecord.created_at >= since)
    async with sessions() as session:
        bind = session.get_bind()
        day = _utc_day(bind.dialect.name).label("day")
        by_key = (
            await session.execute(
                select(UsageRecord.subject, *totals)
                .where(*scope)
                .group_by(UsageRecord.subject)
                .order_by(totals[0].desc(), UsageRecord.subject)
            )
        ).all()
        by_day = (
            await session.execute(select(day, *totals).where(*scope).group_by(day).order_by(day))
        ).all()
        total = (await session.execute(select(*totals).where(*scope))).one()
    return UsageSummary(
        by_key=[UsageRow(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in by_key],
        by_day=[UsageRow(_day_text(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in by_day],
        total=UsageRow("", int(total[0]), int(total[1]), int(total[2])),
    )
