"""Budgets in money: reservation before a call and settlement after, exact across two
gateway replicas sharing the real Redis; refusals; the rebuild from the usage records."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI, Request
from redis.asyncio import Redis
from sqlalchemy import select

from aimesh_common.server import GrpcServer
from aimesh_gateway.core.config import default_database_url
from aimesh_gateway.db.models import UsageRecord
from aimesh_gateway.limits.budgets import to_micros
from aimesh_gateway.main import create_app
from aimesh_gateway.state import state_of
from aimesh_llm_router.config import Settings as RouterSettings
from aimesh_llm_router.modelconfig import validate_models_config
from aimesh_llm_router.providers import PROVIDERS
from aimesh_llm_router.server import build_dependencies, create_server
from tests.gateway.conftest import FakeMesh, serve_on_free_port
from tests.gateway.helpers import assert_problem, bearer, settings_for, token
from tests.gateway.limits.test_ratelimit import private_redis
from tests.llm_router.openai_server import FakeOpenAI, Reply

SHARED_REDIS = "redis://127.0.0.1:6379/0"
__all__ = ["private_redis"]  # a fixture of the rate-limit tests: a redis-server of our own
PRICED = {"provider": "local", "price_per_1k_input": 1.0, "price_per_1k_output": 2.0}
MODELS: dict[str, Any] = {
    "models": {
        "default": {**PRICED, "max_tokens": 40},
        "capped": {**PRICED, "max_tokens": 40},
        # Unpriced: an upstream that is never called (the gateway refuses first).
        "remote": {"provider": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
    }
}


@dataclass
class Replicas:
    apps: list[FastAPI]
    clients: list[httpx.AsyncClient]
    redis: Redis
    prefix: str


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[FakeOpenAI]:
    """An OpenAI-protocol upstream for the alias ``slow`` (streams paced by the test)."""
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def router_addr(fake_mesh: FakeMesh, upstream: FakeOpenAI) -> AsyncIterator[str]:
    """The real LLM router serving priced aliases with the local provider, and ``slow``:
    priced, on the OpenAI-protocol test upstream."""
    slow = {**PRICED, "provider": "openai", "model": "m", "base_url": upstream.base_url}
    models = {"models": {**MODELS["models"], "slow": {**slow, "max_retries": 0}}}
    config = validate_models_config(models, "test", frozenset(PROVIDERS), environ={})
    settings = RouterSettings(port=0, host="127.0.0.1", metrics_port=None)
    channels = [
        grpc.aio.insecure_channel(addr)
        for addr in (fake_mesh.retrieval_addr, fake_mesh.embedding_addr)
    ]
    deps = build_dependencies(
        settings, config=config, retrieval_channel=channels[0], embedding_channel=channels[1]
    )
    server: GrpcServer = create_server(settings, deps)
    await server.start()
    yield f"127.0.0.1:{server.port}"
    await server.stop(0)
    await deps.aclose()
    for channel in channels:
        await channel.close()


@pytest.fixture
async def replicas(
    fake_mesh: FakeMesh, router_addr: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Replicas]:
    """Two gateway apps (two replicas) sharing the real Redis (a prefix of their own) and
    one database."""
    prefix = f"test-budget-{uuid.uuid4().hex[:8]}:"
    overrides: dict[str, Any] = getattr(request, "param", {})
    settings = settings_for(
        router_addr=router_addr,
        retrieval_addr=fake_mesh.retrieval_addr,
        embedding_addr=fake_mesh.embedding_addr,
        redis_url=overrides.get("redis_url", SHARED_REDIS),
        redis_key_prefix=prefix,
        database_url=default_database_url(tmp_path),
        budget_cache_seconds=0.0,
        **{k: v for k, v in overrides.items() if k != "redis_url"},
    )
    redis = Redis.from_url(SHARED_REDIS)
    async with AsyncExitStack() as stack:
        apps, clients = [], []
        for _ in range(2):
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            client = httpx.AsyncClient(transport=transport, base_url="http://gateway")
            await stack.enter_async_context(client)
            apps.append(app)
            clients.append(client)
        yield Replicas(apps, clients, redis, prefix)
    keys = [key async for key in redis.scan_iter(f"{prefix}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


TENANT = "budget-co"


def caller(subject: str = "alice") -> dict[str, str]:
    return bearer(token(TENANT, ["user"], subject=subject))


def tenant_admin() -> dict[str, str]:
    return bearer(token(TENANT, ["admin"], subject="boss"))


async def create_budget(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"scope": "tenant", "window": "day", "mode": "hard", **fields}
    response = await client.post("/v1/admin/budgets", json=body, headers=tenant_admin())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def chat(max_tokens: int = 30, model: str = "default", text: str = "Hello there") -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
    }


async def recorded_spend(replicas: Replicas) -> int:
    """The tenant's spend in the usage records, once both replicas have written theirs."""
    for app in replicas.apps:
        await state_of(app).usage.drain()
    async with state_of(replicas.apps[0]).db_sessions() as session:
        costs = await session.scalars(
            select(UsageRecord.cost_usd).where(UsageRecord.tenant_id == TENANT)
        )
        return sum(to_micros(cost) for cost in costs)


async def one_call_cost(replicas: Replicas) -> tuple[int, float]:
    """(reservation in micros, real cost in USD) of the test's call, measured once."""
    response = await replicas.clients[0].post("/v1/chat/completions", json=chat(), headers=caller())
    assert response.status_code == 200, response.text
    real = await recorded_spend(replicas)
    return real, real / 1e6


async def test_fifty_concurrent_calls_on_two_replicas_never_overrun(replicas: Replicas) -> None:
    real, _ = await one_call_cost(replicas)
    assert real > 0, "the priced alias must cost something"
    # A budget of a few calls' reservations above what is already spent.
    probe = await create_budget(replicas.clients[0], limit_usd=1.0)
    refused = await replicas.clients[0].patch(
        "/v1/admin/budgets/" + probe["id"], json={"limit_usd": 1e-6}, headers=tenant_admin()
    )
    assert refused.status_code == 200
    response = await replicas.clients[1].post("/v1/chat/completions", json=chat(), headers=caller())
    body = assert_problem(response, 429)
    reservation = body["call_usd"]
    await replicas.clients[0].delete(f"/v1/admin/budgets/{probe['id']}", headers=tenant_admin())
    limit = real / 1e6 + 3.5 * reservation
    budget = await create_budget(replicas.clients[0], limit_usd=limit)

    async def call(index: int) -> httpx.Response:
        client = replicas.clients[index % 2]
        return await client.post("/v1/chat/completions", json=chat(), headers=caller())

    responses = await asyncio.gather(*(call(i) for i in range(50)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    spent = await recorded_spend(replicas)
    assert spent <= round(limit * 1e6), (spent, limit)
    # At least the calls whose reservations fit were let through...
    assert statuses.count(200) >= 3
    # ...and every refusal was due: what was spent and reserved left too little for it.
    for response in responses:
        if response.status_code == 429:
            problem = response.json()
            assert problem["code"] == "budget_exceeded"
            assert problem["budget_id"] == budget["id"]
            covered = problem["spent_usd"] + problem["reserved_usd"] + problem["call_usd"]
            assert covered > limit - 1e-9, problem
    # The admin view reads the same spend from the usage records.
    shown = await replicas.clients[1].get(
        f"/v1/admin/budgets/{budget['id']}", headers=tenant_admin()
    )
    assert shown.status_code == 200
    assert shown.json()["spend"]["spent_usd"] == pytest.approx(spent / 1e6)
    assert shown.json()["spend"]["reserved_usd"] == 0


async def test_refusal_shape_on_openai_route(replicas: Replicas) -> None:
    await create_budget(replicas.clients[0], limit_usd=1e-6, window="month")
    response = await replicas.clients[0].post("/v1/chat/completions", json=chat(), headers=caller())
    body = assert_problem(response, 429)
    assert body["code"] == "budget_exceeded"
    assert body["scope"] == "tenant"
    assert body["window"] == "month"
    assert body["error"]["code"] == "budget_exceeded"
    assert body["error"]["type"] == "rate_limit_error"
    retry = int(response.headers["Retry-After"])
    assert 0 < retry <= 31 * 86_400
    metrics = (await replicas.clients[0].get("/metrics")).text
    assert 'aimesh_rate_limited_total{limit="budget",scope="tenant"} 1.0' in metrics


async def test_budget_narrowed_to_an_alias_and_a_user(replicas: Replicas) -> None:
    await create_budget(replicas.clients[0], limit_usd=1e-6, model="capped")
    await create_budget(replicas.clients[0], limit_usd=1e-6, scope="user", subject="bob")
    ok = await replicas.clients[0].post("/v1/chat/completions", json=chat(), headers=caller())
    assert ok.status_code == 200, ok.text
    capped = await replicas.clients[0].post(
        "/v1/chat/completions", json=chat(model="capped"), headers=caller()
    )
    assert assert_problem(capped, 429)["scope"] == "tenant"
    bob = await replicas.clients[1].post("/v1/chat/completions", json=chat(), headers=caller("bob"))
    assert assert_problem(bob, 429)["scope"] == "user"


async def test_unpriced_alias_is_refused_under_a_hard_budget(replicas: Replicas) -> None:
    await create_budget(replicas.clients[0], limit_usd=100.0)
    response = await replicas.clients[0].post(
        "/v1/chat/completions", json=chat(model="remote"), headers=caller()
    )
    body = assert_problem(response, 403)
    assert "no prices configured" in body["detail"]


async def test_soft_budget_only_alerts(replicas: Replicas) -> None:
    await create_budget(replicas.clients[0], limit_usd=1e-6, mode="soft")
    response = await replicas.clients[0].post("/v1/chat/completions", json=chat(), headers=caller())
    assert response.status_code == 200, response.text
    metrics = (await replicas.clients[0].get("/metrics")).text
    assert 'aimesh_budget_alerts_total{mode="soft",scope="tenant",threshold="100"} 1.0' in metrics


async def test_streamed_call_settles_and_releases(replicas: Replicas) -> None:
    budget = await create_budget(replicas.clients[0], limit_usd=1.0)
    async with replicas.clients[0].stream(
        "POST", "/v1/chat/completions", json={**chat(), "stream": True}, headers=caller()
    ) as response:
        assert response.status_code == 200
        text = "".join([part async for part in response.aiter_text()])
    assert "[DONE]" in text
    spent = await recorded_spend(replicas)
    assert spent > 0
    shown = await replicas.clients[1].get(
        f"/v1/admin/budgets/{budget['id']}", headers=tenant_admin()
    )
    assert shown.json()["spend"]["reserved_usd"] == 0
    assert shown.json()["spend"]["spent_usd"] == pytest.approx(spent / 1e6)


async def test_a_responses_call_settles_to_its_cost(replicas: Replicas) -> None:
    """The Responses API (streamed or not) settles to the router's cost; nothing stays held."""
    budget = await create_budget(replicas.clients[0], limit_usd=1.0)
    body = {"model": "default", "input": "Hello there", "max_output_tokens": 30}
    whole = await replicas.clients[0].post("/v1/responses", json=body, headers=caller())
    assert whole.status_code == 200, whole.text
    async with replicas.clients[1].stream(
        "POST", "/v1/responses", json={**body, "stream": True}, headers=caller()
    ) as response:
        assert response.status_code == 200
        text = "".join([part async for part in response.aiter_text()])
    assert "response.completed" in text
    spent = await recorded_spend(replicas)
    assert spent > 0
    shown = await replicas.clients[0].get(
        f"/v1/admin/budgets/{budget['id']}", headers=tenant_admin()
    )
    assert shown.json()["spend"]["reserved_usd"] == 0
    assert shown.json()["spend"]["spent_usd"] == pytest.approx(spent / 1e6)


async def test_counters_are_rebuilt_from_usage_records_after_a_flush(replicas: Replicas) -> None:
    real, cost = await one_call_cost(replicas)
    # Room for the spend so far plus about one reservation.
    budget = await create_budget(replicas.clients[0], limit_usd=cost * 1.5)
    refused = await replicas.clients[0].post("/v1/chat/completions", json=chat(), headers=caller())
    assert refused.status_code == 429
    # Redis loses everything of this deployment: the spend must come back from SQL.
    keys = [key async for key in replicas.redis.scan_iter(f"{replicas.prefix}bg:*")]
    assert keys
    await replicas.redis.delete(*keys)
    again = await replicas.clients[1].post("/v1/chat/completions", json=chat(), headers=caller())
    problem = assert_problem(again, 429)
    assert problem["spent_usd"] == pytest.approx(real / 1e6)
    assert problem["budget_id"] == budget["id"]


@pytest.mark.parametrize(
    "replicas", [{"redis_url": "redis://127.0.0.1:1/0"}], indirect=True, ids=["redis-down"]
)
async def test_redis_down_fails_closed_under_a_hard_budget(replicas: Replicas) -> None:
    await create_budget(replicas.clients[0], limit_usd=100.0)
    response = await replicas.clients[0].post("/v1/chat/completions", json=chat(), headers=caller())
    assert_problem(response, 503)
    ready = await replicas.clients[0].get("/readyz")
    assert ready.json()["budgets"] == "degraded"


async def test_admin_routes_validate_and_hide_other_tenants(replicas: Replicas) -> None:
    client = replicas.clients[0]
    budget = await create_budget(client, limit_usd=5.0)
    bad = await client.post(
        "/v1/admin/budgets",
        json={"scope": "key", "window": "rolling", "limit_usd": 1},
        headers=tenant_admin(),
    )
    assert assert_problem(bad, 422)["errors"]
    unknown_key = await client.post(
        "/v1/admin/budgets",
        json={"scope": "key", "subject": "0" * 32, "window": "day", "limit_usd": 1},
        headers=tenant_admin(),
    )
    assert "no API key" in assert_problem(unknown_key, 422)["detail"]
    key = await client.post("/v1/admin/keys", json={"roles": ["user"]}, headers=tenant_admin())
    key_budget = await create_budget(client, scope="key", subject=key.json()["id"], limit_usd=1)
    assert key_budget["subject"] == key.json()["id"]
    allowed = await client.post(
        "/v1/chat/completions", json=chat(), headers=bearer(key.json()["key"])
    )
    assert allowed.status_code == 200  # 1 USD covers a call
    await client.delete(f"/v1/admin/budgets/{key_budget['id']}", headers=tenant_admin())
    assert (await client.get("/v1/admin/budgets", headers=caller())).status_code == 403
    assert (await client.get("/v1/admin/budgets")).status_code == 401
    other = bearer(token("other-co", ["admin"], subject="eve"))
    assert (await client.get(f"/v1/admin/budgets/{budget['id']}", headers=other)).status_code == 404
    listed = (await client.get("/v1/admin/budgets", headers=other)).json()
    assert listed == {"budgets": []}
    assert (
        await client.delete(f"/v1/admin/budgets/{budget['id']}", headers=other)
    ).status_code == 404
    mine = (await client.get("/v1/admin/budgets", headers=tenant_admin())).json()["budgets"]
    assert [b["id"] for b in mine] == [budget["id"]]
    # The key's call counts against the tenant's budget too.
    assert mine[0]["spend"]["percent"] > 0


async def test_every_spending_route_is_refused_under_a_spent_budget(replicas: Replicas) -> None:
    """ask, summarize, rag: models, conversations and the Responses API reserve too
    (streamed or not)."""
    client = replicas.clients[0]
    conversation = await client.post("/v1/conversations", json={}, headers=caller())
    assert conversation.status_code == 201, conversation.text
    await create_budget(client, limit_usd=1e-6)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/v1/ask", {"question": "what?", "collection": "docs"}),
        ("/v1/ask", {"question": "what?", "collection": "docs", "stream": True}),
        ("/v1/summarize", {"text": "A long text to summarize. " * 5}),
        ("/v1/summarize", {"text": "A long text to summarize. " * 5, "stream": True}),
        ("/v1/chat/completions", {**chat(), "model": "rag:docs"}),
        ("/v1/chat/completions", {**chat(), "model": "rag:docs", "stream": True}),
        ("/v1/chat/completions", {**chat(), "stream": True}),
        (f"/v1/conversations/{conversation.json()['id']}/messages", {"content": "hi"}),
        ("/v1/responses", {"model": "default", "input": "hi", "max_output_tokens": 30}),
        ("/v1/responses", {"model": "default", "input": "hi", "stream": True}),
        (
            "/v1/responses",
            {
                "model": "default",
                "input": "what?",
                "tools": [{"type": "file_search", "vector_store_ids": ["docs"]}],
            },
        ),
    ]
    for url, body in calls:
        response = await client.post(url, json=body, headers=caller())
        assert assert_problem(response, 429)["code"] == "budget_exceeded", url
    assert await recorded_spend(replicas) == 0


async def _webhook_receiver() -> tuple[FastAPI, list[tuple[bytes, str]]]:
    received: list[tuple[bytes, str]] = []
    hook = FastAPI()

    @hook.post("/hook")
    async def receive(request: Request) -> dict[str, bool]:
        received.append((await request.body(), request.headers["x-aimesh-signature"]))
        return {"ok": True}

    return hook, received


async def test_threshold_crossing_calls_the_signed_webhook(
    fake_mesh: FakeMesh, router_addr: str, tmp_path: Path
) -> None:
    hook, received = await _webhook_receiver()
    async with serve_on_free_port(hook) as hook_url:
        settings = settings_for(
            router_addr=router_addr,
            retrieval_addr=fake_mesh.retrieval_addr,
            embedding_addr=fake_mesh.embedding_addr,
            database_url=default_database_url(tmp_path),
            budget_webhook_url=f"{hook_url}/hook",
            budget_webhook_secret="webhook-secret-for-tests",
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                budget = await create_budget(client, limit_usd=1e-6, mode="soft")
                response = await client.post("/v1/chat/completions", json=chat(), headers=caller())
                assert response.status_code == 200, response.text
                webhook = state_of(app).budgets.webhook
                assert webhook is not None
                await webhook.drain()
    # One call crossed 50, 80 and 100 % at once: one signed POST each.
    assert len(received) == 3
    for body, signature in received:
        expected = hmac.new(b"webhook-secret-for-tests", body, hashlib.sha256).hexdigest()
        assert signature == f"sha256={expected}"
    events = [json.loads(body) for body, _ in received]
    assert sorted(e["threshold_percent"] for e in events) == [50, 80, 100]
    assert {e["budget_id"] for e in events} == {budget["id"]}


async def test_in_process_budgets_without_redis(
    fake_mesh: FakeMesh, router_addr: str, tmp_path: Path
) -> None:
    """The embedded default (no Redis): the same reservation in process, seeded from SQL."""
    settings = settings_for(
        router_addr=router_addr,
        retrieval_addr=fake_mesh.retrieval_addr,
        embedding_addr=fake_mesh.embedding_addr,
        database_url=default_database_url(tmp_path),
        budget_cache_seconds=0.0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            first = await client.post("/v1/chat/completions", json=chat(), headers=caller())
            assert first.status_code == 200
            await state_of(app).usage.drain()
            await create_budget(client, limit_usd=1e-6)
            refused = await client.post("/v1/chat/completions", json=chat(), headers=caller())
            problem = assert_problem(refused, 429)
            assert problem["spent_usd"] > 0  # the earlier call, from the usage records
            ready = await client.get("/readyz")
            assert ready.json()["budgets"] == "local"


# Once, on a loaded machine, this test's teardown (the replicas' lifespans) hung until the
# suite's timeout; the cause was not found (see the branch's report): bounded here.
STREAMED_BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {**chat(model="slow", max_tokens=400), "stream": True}),
    "responses": (
        "/v1/responses",
        {"model": "slow", "input": "Hello there", "max_output_tokens": 400, "stream": True},
    ),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("route", sorted(STREAMED_BODIES))
async def test_a_cancelled_stream_settles_what_it_spent(
    replicas: Replicas, upstream: FakeOpenAI, route: str
) -> None:
    """A client that goes away mid-stream: the reservation is settled to the prompt and the
    deltas streamed so far (a usage record says so), and nothing stays reserved. Through
    Chat Completions and through the Responses API."""
    path, body = STREAMED_BODIES[route]
    budget = await create_budget(replicas.clients[0], limit_usd=10.0)
    words = " ".join(f"word{n}" for n in range(60))  # 3 s in all: the upstream ends soon
    upstream.enqueue(Reply(content=words, chunk_delay=0.05))
    app = replicas.apps[0]
    async with serve_on_free_port(app, lifespan=False) as url, httpx.AsyncClient() as http:
        async with http.stream(
            "POST",
            f"{url}{path}",
            json=body,
            headers=caller(),
        ) as response:
            assert response.status_code == 200
            seen = 0
            async for line in response.aiter_lines():
                seen += line.count("word")
                if seen >= 3:
                    break  # the client goes away
        for _ in range(100):
            spent = await recorded_spend(replicas)
            if spent:
                break
            await asyncio.sleep(0.05)
    assert spent > 0
    # Far less than the whole reply could have cost (400 tokens reserved).
    full = (400 * 2.0) / 1000 * 1e6
    assert spent < full / 4, spent
    shown = await replicas.clients[1].get(
        f"/v1/admin/budgets/{budget['id']}", headers=tenant_admin()
    )
    assert shown.json()["spend"]["reserved_usd"] == 0
    assert shown.json()["spend"]["spent_usd"] == pytest.approx(spent / 1e6)
    # One figure: the budget was settled to exactly what the usage record was charged (the
    # router's last ``spent``), and the record says it is an estimate.
    keys = [
        key async for key in replicas.redis.scan_iter(f"{replicas.prefix}bg:{budget['id']}:s:*")
    ]
    fields = await replicas.redis.hgetall(keys[0])
    assert sum(int(v) for k, v in fields.items() if k != b"_seeded") == spent
    async with state_of(app).db_sessions() as session:
        rows = (
            await session.scalars(select(UsageRecord).where(UsageRecord.tenant_id == TENANT))
        ).all()
    assert [row.estimated for row in rows] == [True]


async def test_calls_let_through_during_an_outage_count_once_redis_is_back(
    fake_mesh: FakeMesh,
    router_addr: str,
    tmp_path: Path,
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """Redis unreachable (paused, its data kept) with the fail-open policy: the calls let
    through are not lost; the window is rebuilt from the usage records once it is back."""
    url, _ = private_redis
    prefix = "budget-outage:"
    settings = settings_for(
        router_addr=router_addr,
        retrieval_addr=fake_mesh.retrieval_addr,
        embedding_addr=fake_mesh.embedding_addr,
        database_url=default_database_url(tmp_path),
        redis_url=url,
        redis_key_prefix=prefix,
        budget_redis_failure="open",
        budget_cache_seconds=0.0,
    )
    app = create_app(settings)
    redis = Redis.from_url(url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            budget = await create_budget(client, limit_usd=100.0)
            for _ in range(2):
                response = await client.post("/v1/chat/completions", json=chat(), headers=caller())
                assert response.status_code == 200
            await redis.client_pause(2500)
            during = await client.post("/v1/chat/completions", json=chat(), headers=caller())
            assert during.status_code == 200  # fail-open: let through, not counted in Redis
            await asyncio.sleep(3.6)  # the pause ends; the gateway retries Redis after 1 s
            after = await client.post("/v1/chat/completions", json=chat(), headers=caller())
            assert after.status_code == 200
            await state_of(app).usage.drain()
            async with state_of(app).db_sessions() as session:
                costs = await session.scalars(
                    select(UsageRecord.cost_usd).where(UsageRecord.tenant_id == TENANT)
                )
                truth = sum(to_micros(cost) for cost in costs)
    keys = [key async for key in redis.scan_iter(f"{prefix}bg:{budget['id']}:s:*")]
    fields = await redis.hgetall(keys[0])
    await redis.aclose()
    counted = sum(int(v) for k, v in fields.items() if k != b"_seeded")
    assert counted == truth  # all four calls, the one let through during the outage included
