"""The feedback store and the usage report on both database backends (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from aimesh_gateway.auth.security import Principal, Role
from aimesh_gateway.core.config import Settings
from aimesh_gateway.db.engine import session_factory
from aimesh_gateway.limits.ratelimit import RateLimiter
from aimesh_gateway.observability.metrics import HttpMetrics
from aimesh_gateway.stores.feedback import FeedbackStore, UnknownAnswer
from aimesh_gateway.stores.usage import UsageMeter
from aimesh_gateway.stores.usage_report import usage_summary, window_start

ASK = "/v1/ask"


def principal(tenant: str, subject: str = "ann") -> Principal:
    return Principal(subject=subject, tenant_id=tenant, roles=frozenset({Role.USER}), method="jwt")


@pytest.fixture(scope="module")
def metrics() -> HttpMetrics:
    return HttpMetrics()


def meter_for(engine: AsyncEngine, metrics: HttpMetrics) -> UsageMeter:
    settings = Settings(data_dir="/nonexistent-unused")
    return UsageMeter(session_factory(engine), RateLimiter(settings, metrics, None), metrics)


async def test_rate_rerate_and_summarize(db_engine: AsyncEngine, metrics: HttpMetrics) -> None:
    meter = meter_for(db_engine, metrics)
    store = FeedbackStore(session_factory(db_engine), meter)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ann = principal(tenant)
    for rid, version in (("r1", "qa/v1"), ("r2", "qa/v2")):
        await meter.record(
            ann, ASK, "default", 10, 2, request_id=rid, provider="openai", prompt_version=version
        )
    # Not awaited on purpose: the store waits for the pending usage writes itself.
    row, created = await store.rate(ann, "r1", 1, None)
    assert created
    assert (row.route, row.model, row.provider, row.prompt_version) == (
        ASK,
        "default",
        "openai",
        "qa/v1",
    )
    again, created = await store.rate(ann, "r1", -1, "meh")
    assert not created
    assert again.id == row.id
    await store.rate(principal(tenant, "bob"), "r1", -1, None)
    await store.rate(ann, "r2", 1, None)
    with pytest.raises(UnknownAnswer):
        await store.rate(principal(f"x-{tenant}"), "r1", 1, None)
    with pytest.raises(UnknownAnswer):
        await store.rate(ann, "r3", 1, None)

    listed = await store.recent(tenant, None, 10)
    assert [(f.request_id, f.subject, f.rating) for f in listed] == [
        ("r2", "ann", 1),
        ("r1", "bob", -1),
        ("r1", "ann", -1),
    ]
    assert [f.subject for f in await store.recent(tenant, -1, 10)] == ["bob", "ann"]
    rows = await store.summary(tenant)
    assert [(r.prompt_version, r.count, r.up, r.down, r.score) for r in rows] == [
        ("qa/v1", 2, 0, 2, -1.0),
        ("qa/v2", 1, 1, 0, 1.0),
    ]


async def test_concurrent_first_ratings_keep_one_row(
    db_engine: AsyncEngine, metrics: HttpMetrics
) -> None:
    meter = meter_for(db_engine, metrics)
    store = FeedbackStore(session_factory(db_engine), meter)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ann = principal(tenant)
    await meter.record(ann, ASK, "default", 1, 1, request_id="same")
    await meter.drain()
    results = await asyncio.gather(*(store.rate(ann, "same", 1, str(i)) for i in range(4)))
    assert sum(created for _, created in results) == 1
    assert len(await store.recent(tenant, None, 10)) == 1


async def test_usage_summary_groups_by_utc_day(
    db_engine: AsyncEngine, metrics: HttpMetrics
) -> None:
    meter = meter_for(db_engine, metrics)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    for subject in ("ann", "ann", "bob"):
        await meter.record(principal(tenant, subject), ASK, "default", 5, 1)
    await meter.drain()
    summary = await usage_summary(session_factory(db_engine), tenant, window_start(7))
    assert [(r.key, r.requests, r.prompt_tokens) for r in summary.by_key] == [
        ("ann", 2, 10),
        ("bob", 1, 5),
    ]
    assert [(r.key, r.requests) for r in summary.by_day] == [
        (datetime.now(UTC).date().isoformat(), 3)
    ]
    assert (summary.total.requests, summary.total.completion_tokens) == (3, 3)


def test_window_start_is_midnight_utc_days_back() -> None:
    now = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
    assert window_start(1, now) == datetime(2026, 3, 10, tzinfo=UTC)
    assert window_start(7, now) == datetime(2026, 3, 4, tzinfo=UTC)
    assert window_start(7, now) - window_start(8, now) == timedelta(days=1)
