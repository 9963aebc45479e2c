"""Token accounting: chat usage feeds the tokens-per-minute budget, metrics and usage records."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from aimesh_gateway.db.models import UsageRecord
from aimesh_gateway.state import state_of
from tests.gateway.helpers import ADMIN, assert_problem, bearer

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
