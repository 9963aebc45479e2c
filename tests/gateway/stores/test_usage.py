"""Token accounting: chat usage feeds the tokens-per-minute budget, metrics and usage records."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from aimesh_gateway.core.config import Settings
from aimesh_gateway.db.engine import session_factory
from aimesh_gateway.db.models import UsageRecord, utcnow
from aimesh_gateway.observability.metrics import HttpMetrics
from aimesh_gateway.state import state_of
from aimesh_gateway.stores import usage as usage_store
from aimesh_gateway.stores.usage import WRITE_BATCH, UsageRetention
from tests.gateway.helpers import ADMIN, assert_problem, bearer
from tests.gateway.stores.test_feedback import ASK, meter_for, metrics, principal

__all__ = ["metrics"]  # the fixture, shared with the feedback tests

CHAT = "/v1/chat/completions"


async def test_tokens_are_charged_recorded_and_limited(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    tenant = f"tpm-{uuid.uuid4().hex[:8]}"
    created = await client.post(
        "/v1/admin/keys", json={"tenant_id": tenant, "roles": ["user"], "tpm": 5}, headers=ADMIN
    )
    key = bearer(created.json()["key"])
    body = {"model": "default", "messages": [{"role": "user", "content": "hello there world"}]}

    first = await client.post(CHAT, json=body, headers=key)
    assert first.status_code == 200, first.text
    spent = first.json()["usage"]["total_tokens"]
    assert spent > 5  # the fake router reports real counts; the budget is now in debt

    refused = await client.post(CHAT, json=body, headers=key)
    assert_problem(refused, 429)
    assert int(refused.headers["retry-after"]) >= 1

    await state_of(app).usage.drain()
    async with state_of(app).db_sessions() as session:
        rows = list(
            await session.scalars(select(UsageRecord).where(UsageRecord.tenant_id == tenant))
        )
    assert len(rows) == 1
    assert rows[0].prompt_tokens + rows[0].completion_tokens == spent
    assert rows[0].route == CHAT

    metrics = (await client.get("/metrics")).text
    assert 'aimesh_tokens_total{kind="prompt"}' in metrics
    assert 'aimesh_rate_limited_total{limit="tpm",scope="key"} 1.0' in metrics


async def test_records_arriving_together_share_a_transaction(
    db_engine: AsyncEngine, metrics: HttpMetrics
) -> None:
    """Under load every record is written, in far fewer transactions than records."""
    meter = meter_for(db_engine, metrics)
    tenant = f"batch-{uuid.uuid4().hex[:8]}"
    commits = 0

    def counted(*_: object) -> None:
        nonlocal commits
        commits += 1

    event.listen(db_engine.sync_engine, "commit", counted)
    try:
        for n in range(1200):  # recorded back to back, as many requests finishing at once
            await meter.record(principal(tenant), ASK, "default", 10, n, request_id=f"r{n}")
        await meter.drain()
    finally:
        event.remove(db_engine.sync_engine, "commit", counted)
    async with session_factory(db_engine)() as session:
        rows = list(
            await session.scalars(select(UsageRecord).where(UsageRecord.tenant_id == tenant))
        )
    assert sorted(row.completion_tokens for row in rows) == list(range(1200))
    assert commits <= 1200 // WRITE_BATCH + 1
    # One at a time, each is written before the next is recorded.
    await meter.record(principal(tenant), ASK, "default", 1, 1, request_id="alone")
    await meter.drain()
    async with session_factory(db_engine)() as session:
        alone = await session.scalars(
            select(UsageRecord).where(
                UsageRecord.tenant_id == tenant, UsageRecord.request_id == "alone"
            )
        )
        assert len(list(alone)) == 1


async def test_retention_deletes_only_records_past_it(
    db_engine: AsyncEngine, metrics: HttpMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old records go, batch by batch; recent ones stay; the retention task runs at start."""
    monkeypatch.setattr(usage_store, "DELETE_BATCH", 3)
    meter = meter_for(db_engine, metrics)
    tenant = f"keep-{uuid.uuid4().hex[:8]}"
    now = utcnow()
    ages = [500, 450, 401, 401, 402, 600, 700, 399, 10, 0]  # days
    async with session_factory(db_engine).begin() as session:
        session.add_all(
            UsageRecord(
                tenant_id=tenant,
                subject="ann",
                route=ASK,
                completion_tokens=age,
                created_at=now - timedelta(days=age),
            )
            for age in ages
        )

    async def kept() -> list[int]:
        async with session_factory(db_engine)() as session:
            rows = await session.scalars(
                select(UsageRecord.completion_tokens).where(UsageRecord.tenant_id == tenant)
            )
            return sorted(rows)

    retention = UsageRetention(meter, 400, every=3600, first_after=0)
    retention.start()
    try:
        for _ in range(100):
            if await kept() == [0, 10, 399]:
                break
            await asyncio.sleep(0.05)
    finally:
        await retention.close()
    assert await kept() == [0, 10, 399]
    # Nothing more to delete: a no-op.
    assert await meter.delete_older_than(utcnow() - timedelta(days=400)) == 0


def test_retention_keeps_at_least_every_budget_window() -> None:
    with pytest.raises(ValidationError, match="usage_retention_days"):
        Settings(data_dir="/nonexistent-unused", usage_retention_days=30)
