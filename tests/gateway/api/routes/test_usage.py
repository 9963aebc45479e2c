"""GET /v1/admin/usage: the tenant's token usage per key or user, per day and in total."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from aimesh_gateway.db.models import UsageRecord
from aimesh_gateway.state import state_of
from tests.gateway.conftest import on_each_database
from tests.gateway.helpers import assert_problem, bearer, token

# The routes keep state: every test runs on SQLite and on the real PostgreSQL.
app, client = on_each_database()


CHAT = "/v1/chat/completions"


def as_user(tenant: str, subject: str) -> dict[str, str]:
    return bearer(token(tenant, ["user"], subject=subject))


async def test_usage_by_key_day_and_total(app: FastAPI, client: httpx.AsyncClient) -> None:
    acme = f"use-{uuid.uuid4().hex[:8]}"
    spent: dict[str, list[int]] = {"ann": [0, 0, 0], "bob": [0, 0, 0]}
    for subject, calls in (("ann", 2), ("bob", 1)):
        for _ in range(calls):
            reply = await client.post(
                CHAT,
                json={"model": "default", "messages": [{"role": "user", "content": "one two"}]},
                headers=as_user(acme, subject),
            )
            assert reply.status_code == 200, reply.text
            usage = reply.json()["usage"]
            spent[subject][0] += 1
            spent[subject][1] += usage["prompt_tokens"]
            spent[subject][2] += usage["completion_tokens"]
    # Older rows: one 3 days ago (inside 7 days), one 20 days ago (outside).
    now = datetime.now(UTC)
    async with state_of(app).db_sessions.begin() as session:
        for age, tokens in ((3, 100), (20, 1000)):
            session.add(
                UsageRecord(
                    tenant_id=acme,
                    subject="ann",
                    route=CHAT,
                    model="default",
                    prompt_tokens=tokens,
                    completion_tokens=1,
                    created_at=now - timedelta(days=age),
                )
            )
    # Another tenant's usage is never counted.
    await client.post(
        CHAT,
        json={"model": "default", "messages": [{"role": "user", "content": "x"}]},
        headers=as_user(f"other-{acme}", "ann"),
    )

    admin = bearer(token(acme, ["admin"]))
    response = await client.get("/v1/admin/usage?days=7", headers=admin)
    assert response.status_code == 200, response.text
    report = response.json()
    ann, bob = spent["ann"], spent["bob"]
    assert report["by_key"] == [
        {
            "subject": "ann",
            "requests": ann[0] + 1,
            "prompt_tokens": ann[1] + 100,
            "completion_tokens": ann[2] + 1,
        },
        {
            "subject": "bob",
            "requests": bob[0],
            "prompt_tokens": bob[1],
            "completion_tokens": bob[2],
        },
    ]
    today = now.date().isoformat()
    old = (now - timedelta(days=3)).date().isoformat()
    assert report["by_day"] == [
        {"day": old, "requests": 1, "prompt_tokens": 100, "completion_tokens": 1},
        {
            "day": today,
            "requests": ann[0] + bob[0],
            "prompt_tokens": ann[1] + bob[1],
            "completion_tokens": ann[2] + bob[2],
        },
    ]
    assert report["total"] == {
        "requests": ann[0] + bob[0] + 1,
        "prompt_tokens": ann[1] + bob[1] + 100,
        "completion_tokens": ann[2] + bob[2] + 1,
    }
    wide = (await client.get("/v1/admin/usage?days=30", headers=admin)).json()
    assert wide["total"]["requests"] == report["total"]["requests"] + 1
    default = (await client.get("/v1/admin/usage", headers=admin)).json()
    assert default == report  # 7 days by default


async def test_days_must_be_between_1_and_366(client: httpx.AsyncClient) -> None:
    admin = bearer(token("acme", ["admin"]))
    for days in ("0", "367", "-1", "week"):
        assert_problem(await client.get(f"/v1/admin/usage?days={days}", headers=admin), 422)
    assert (await client.get("/v1/admin/usage?days=366", headers=admin)).status_code == 200
    assert (await client.get("/v1/admin/usage?days=1", headers=admin)).status_code == 200


async def test_an_empty_tenant_has_zero_usage(client: httpx.AsyncClient) -> None:
    admin = bearer(token(f"empty-{uuid.uuid4().hex[:8]}", ["admin"]))
    report = (await client.get("/v1/admin/usage", headers=admin)).json()
    assert report == {
        "by_key": [],
        "by_day": [],
        "total": {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0},
    }
