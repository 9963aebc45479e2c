"""GET /healthz, /readyz and /metrics."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest
from grpc_health.v1 import health_pb2

from aimesh_common.server import build_grpc_server
from aimesh_gateway.main import create_app
from tests.conftest import free_port, private_redis_server
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import assert_problem, running, settings_for


async def test_healthz_is_always_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_follows_the_backends_health(
    client: httpx.AsyncClient, fake_mesh: FakeMesh
) -> None:
    health = fake_mesh.embedding_server.health
    await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        response = await client.get("/readyz")
        problem = assert_problem(response, 503)
        assert problem["backends"] == {"llm-router": True, "retrieval": True, "embedding": False}
        assert "embedding" in problem["detail"]
        assert problem["degraded"] == ["embedding"]
        metrics = (await client.get("/metrics")).text
        assert 'aimesh_gateway_degraded{component="embedding"} 1.0' in metrics
        assert (await client.get("/healthz")).status_code == 200
    finally:
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "backends": {"llm-router": True, "retrieval": True, "embedding": True},
        "budgets": "local",  # no Redis: budgets are checked in process
        "degraded": [],
    }


async def test_readyz_is_503_while_a_backend_is_unreachable(
    fake_mesh: FakeMesh, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    settings = settings_for(
        router_addr=fake_mesh.router_addr,
        retrieval_addr=closed,
        embedding_addr=fake_mesh.embedding_addr,
        readiness_timeout_seconds=1.0,
    )
    async with running(create_app(settings)) as client:
        with caplog.at_level(logging.INFO, logger="aimesh.gateway.access"):
            problem = assert_problem(await client.get("/readyz"), 503)
        assert problem["backends"]["retrieval"] is False
        assert problem["backends"]["llm-router"] is True
    # "Not ready yet" is the probe's normal answer while starting: not an INFO access line.
    assert not [r for r in caplog.records if r.name == "aimesh.gateway.access"]


async def test_metrics_is_prometheus_text(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'aimesh_http_requests_total{method="GET",route="/healthz",status="200"}' in response.text
    assert "process_cpu_seconds_total" in response.text


async def test_readyz_turns_200_when_a_late_backend_comes_up(fake_mesh: FakeMesh) -> None:
    port = free_port()
    settings = settings_for(
        router_addr=fake_mesh.router_addr,
        retrieval_addr=f"127.0.0.1:{port}",
        embedding_addr=fake_mesh.embedding_addr,
        readiness_timeout_seconds=1.0,
    )
    async with running(create_app(settings)) as client:
        assert_problem(await client.get("/readyz"), 503)
        late = build_grpc_server(
            host="127.0.0.1",
            port=port,
            register=lambda server: None,
            service_names=["aimesh.retrieval.v1.RetrievalService"],
        )
        await late.start()
        try:
            deadline = time.monotonic() + 20
            status = 503
            while status != 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                status = (await client.get("/readyz")).status_code
            assert status == 200
        finally:
            await late.stop(0)


async def test_readyz_names_redis_as_degraded_while_it_is_down(fake_mesh: FakeMesh) -> None:
    """Limits fail open by default: without Redis the gateway stays ready, says it runs
    degraded in the body and the metric, and recovers when Redis is back (same port)."""
    with private_redis_server() as redis:
        settings = fake_mesh.settings(redis_url=redis.url, readiness_timeout_seconds=1.0)
        async with running(create_app(settings)) as client:
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()["degraded"]) == (200, [])
            assert ready.json()["budgets"] == "ok"
            redis.kill()
            down = await client.get("/readyz")
            assert down.status_code == 200
            assert down.json()["status"] == "ready"
            # Budgets live in the same Redis: degraded with it, in the list as in the state.
            assert down.json()["degraded"] == ["budgets", "redis"]
            assert down.json()["budgets"] == "degraded"
            metrics = (await client.get("/metrics")).text
            assert 'aimesh_gateway_degraded{component="redis"} 1.0' in metrics
            assert 'aimesh_gateway_degraded{component="budgets"} 1.0' in metrics
            assert 'aimesh_gateway_degraded{component="retrieval"} 0.0' in metrics
            redis.start()
            back = await client.get("/readyz")
            assert (back.status_code, back.json()["degraded"]) == (200, [])
            assert back.json()["budgets"] == "ok"
            metrics = (await client.get("/metrics")).text
            assert 'aimesh_gateway_degraded{component="redis"} 0.0' in metrics
            assert 'aimesh_gateway_degraded{component="budgets"} 0.0' in metrics


async def test_readyz_is_503_without_redis_when_limits_fail_closed(fake_mesh: FakeMesh) -> None:
    with private_redis_server() as redis:
        settings = fake_mesh.settings(
            redis_url=redis.url, rate_limit_redis_failure="closed", readiness_timeout_seconds=1.0
        )
        async with running(create_app(settings)) as client:
            redis.kill()
            problem = assert_problem(await client.get("/readyz"), 503)
            assert problem["degraded"] == ["budgets", "redis"]
            assert problem["budgets"] == "degraded"
            assert problem["detail"] == "not serving: redis"
            assert all(problem["backends"].values())
