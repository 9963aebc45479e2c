"""Rate limits: GCRA in process and on Redis (one atomic script), shared by real gateway
processes, and the configured policy when Redis is down."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import HTTPException, Request
from redis.asyncio import Redis

from aimesh_gateway.auth.security import Principal, Role
from aimesh_gateway.core.config import Settings
from aimesh_gateway.limits.ratelimit import Bucket, LocalBuckets, RateLimiter, RedisBuckets, Verdict
from aimesh_gateway.main import create_app
from aimesh_gateway.observability.metrics import HttpMetrics
from tests.conftest import private_redis_server
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import ADMIN_KEY, JWT_SECRET, bearer, running, token

SHARED_REDIS = "redis://127.0.0.1:6379/0"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def shared_redis() -> AsyncIterator[tuple[Redis, str]]:
    """The shared Redis and a key prefix unique to this test (its keys are deleted after)."""
    redis = Redis.from_url(SHARED_REDIS)
    prefix = f"aimesh-test-{uuid.uuid4().hex[:10]}:"
    yield redis, prefix
    keys = [key async for key in redis.scan_iter(f"{prefix}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def test_local_gcra_admits_exactly_the_limit() -> None:
    buckets = LocalBuckets()
    results = [await buckets.run("check", [Bucket("k", 10, 1)]) for _ in range(30)]
    assert sum(r.allowed for r in results) == 10
    assert results[9].remaining == [0]
    refused = results[10]
    assert not refused.allowed
    assert 0 < refused.retry_after_ms <= 6000  # one request every 6 s at 10/min


async def test_redis_script_is_atomic_under_concurrency(shared_redis: tuple[Redis, str]) -> None:
    redis, prefix = shared_redis
    buckets = RedisBuckets(redis)
    key_bucket = Bucket(f"{prefix}key", 25, 1)
    tenant_bucket = Bucket(f"{prefix}tenant", 1000, 1)
    results = await asyncio.gather(
        *(buckets.run("check", [key_bucket, tenant_bucket]) for _ in range(75))
    )
    assert sum(r.allowed for r in results) == 25
    # Refused checks spend nothing: the tenant bucket was charged only for admitted requests.
    after = await buckets.run("check", [Bucket(f"{prefix}tenant", 1000, 1)])
    # 25 admitted + this check = 26 spent (76 if refused checks were charged); the bucket
    # refills one per 60 ms, hence the margin.
    assert 1000 - 26 <= after.remaining[0] <= 1000 - 10


async def test_token_budget_blocks_after_spending(shared_redis: tuple[Redis, str]) -> None:
    redis, prefix = shared_redis
    buckets = RedisBuckets(redis)
    tpm = Bucket(f"{prefix}tpm", 1000, 0)
    assert (await buckets.run("check", [tpm])).allowed
    await buckets.run("charge", [Bucket(tpm.key, 1000, 1500)])  # into debt
    refused = await buckets.run("check", [tpm])
    assert not refused.allowed
    assert refused.retry_after_ms > 25_000  # 500 tokens of debt at 1000/min


def _gateway_env(fake_mesh: FakeMesh, data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AIMESH_HOST": "127.0.0.1",
        "AIMESH_PORT": str(port),
        "AIMESH_DATA_DIR": str(data_dir),
        "AIMESH_ADMIN_API_KEY": ADMIN_KEY,
        "AIMESH_JWT_SECRET": JWT_SECRET,
        "LLM_ROUTER_SERVICE_ADDR": fake_mesh.router_addr,
        "RETRIEVAL_SERVICE_ADDR": fake_mesh.retrieval_addr,
        "EMBEDDING_SERVICE_ADDR": fake_mesh.embedding_addr,
        "AIMESH_LOG_LEVEL": "WARNING",
        **extra,
    }


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gateway exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"gateway at {url} not healthy in {timeout} s")


@pytest.fixture
def two_gateways(
    request: pytest.FixtureRequest, fake_mesh: FakeMesh, shared_redis: tuple[Redis, str]
) -> Iterator[list[str]]:
    """Two real gateway processes sharing the real Redis (and one SQLite file), with
    ``AIMESH_RATE_LIMIT_RPM`` 20 or the test's indirect parameter."""
    _, prefix = shared_redis
    rpm = str(getattr(request, "param", 20))
    data_dir = Path(tempfile.mkdtemp(prefix="aimesh-gw-replicas-"))
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for _ in range(2):
            port = _free_port()
            env = _gateway_env(
                fake_mesh,
                data_dir,
                port,
                AIMESH_REDIS_URL=SHARED_REDIS,
                AIMESH_REDIS_KEY_PREFIX=prefix,
                AIMESH_RATE_LIMIT_RPM=rpm,
                AIMESH_WORKERS="1",
            )
            processes.append(
                subprocess.Popen([str(BIN / "aimesh-gateway")], env=env, start_new_session=True)
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            _wait_healthy(url, process)
        yield urls
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.slow
async def test_two_gateway_processes_share_one_limit_exactly(two_gateways: list[str]) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        # Alternating: each replica admits half, and together exactly the limit.
        headers = bearer(token("replicas", ["user"], subject="alternating"))
        sequential = [
            await client.get(f"{two_gateways[i % 2]}/v1/models", headers=headers) for i in range(30)
        ]
        assert [r.status_code for r in sequential] == [200] * 20 + [429] * 10
        # A concurrent burst on both: the script is atomic, so still exactly the limit.
        headers = bearer(token("replicas", ["user"], subject="burst"))
        burst = await asyncio.gather(
            *(client.get(f"{two_gateways[i % 2]}/v1/models", headers=headers) for i in range(60))
        )
    statuses = [r.status_code for r in burst]
    assert statuses.count(200) == 20, statuses
    assert statuses.count(429) == 40
    refused = next(r for r in burst if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == "20"
    assert refused.headers["ratelimit-remaining"] == "0"


async def _script_calls(redis: Redis) -> int:
    """How many Lua scripts the Redis server has run (EVALSHA and EVAL), per its stats."""
    stats = await redis.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


@pytest.mark.slow
@pytest.mark.parametrize("two_gateways", [300], indirect=True)
async def test_two_gateway_processes_with_leases_never_pass_the_limit(
    two_gateways: list[str], shared_redis: tuple[Redis, str]
) -> None:
    redis, _ = shared_redis
    headers = bearer(token("replicas", ["user"], subject="leases"))
    before = await _script_calls(redis)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:
        statuses = [
            (await client.get(f"{two_gateways[i % 2]}/v1/models", headers=headers)).status_code
            for i in range(400)
        ]
    admitted = statuses.count(200)
    assert statuses.count(429) == 400 - admitted
    # Never more than the limit (plus what refilled meanwhile); at most what the two
    # replicas hold reserved (64 each) goes unused.
    assert 300 - 2 * 64 <= admitted <= 300 + _refill_bound(300, started)
    # Far from the limit the replicas admitted on leased credit, without a script each.
    assert await _script_calls(redis) - before < admitted


@pytest.fixture
def worker_gateway(
    fake_mesh: FakeMesh, shared_redis: tuple[Redis, str]
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """One gateway started with ``AIMESH_WORKERS=2`` (two uvicorn workers, one port)."""
    _, prefix = shared_redis
    data_dir = Path(tempfile.mkdtemp(prefix="aimesh-gw-workers-"))
    port = _free_port()
    env = _gateway_env(
        fake_mesh,
        data_dir,
        port,
        AIMESH_WORKERS="2",
        AIMESH_REDIS_URL=SHARED_REDIS,
        AIMESH_REDIS_KEY_PREFIX=prefix,
        AIMESH_RATE_LIMIT_RPM="15",
    )
    process = subprocess.Popen([str(BIN / "aimesh-gateway")], env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url, process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def _worker_count(pid: int) -> int:
    """Child processes started by multiprocessing's spawn (not its resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    cmdlines = [Path(f"/proc/{child}/cmdline").read_bytes() for child in children]
    return sum(b"spawn_main" in cmdline for cmdline in cmdlines)


@pytest.mark.slow
async def test_workers_of_one_gateway_share_the_limit(
    worker_gateway: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = worker_gateway
    assert _worker_count(process.pid) == 2  # uvicorn's supervisor really runs two workers
    headers = bearer(token("workers", ["user"], subject="w"))
    async with httpx.AsyncClient(timeout=10) as client:
        responses = await asyncio.gather(
            *(client.get(f"{url}/v1/models", headers=headers) for _ in range(45))
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 15, statuses
    assert statuses.count(429) == 30


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test on a free port (never the shared one), stopped after."""
    with private_redis_server() as server:
        assert server.process is not None
        yield server.url, server.process


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_redis_outage_applies_the_policy_never_a_500(
    fake_mesh: FakeMesh,
    private_redis: tuple[str, subprocess.Popen[bytes]],
    policy: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, server = private_redis
    app = create_app(
        fake_mesh.settings(
            redis_url=url,
            rate_limit_rpm=3,
            rate_limit_redis_failure=policy,
        )
    )
    headers = bearer(token("outage", ["user"], subject=f"s-{policy}"))
    async with running(app) as client:
        statuses = [(await client.get("/v1/models", headers=headers)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]

        server.terminate()
        server.wait(timeout=10)
        during = [(await client.get("/v1/models", headers=headers)).status_code for _ in range(5)]
        assert during == ([200] * 5 if policy == "open" else [503] * 5)
        metrics = (await client.get("/metrics")).text
    assert "aimesh_rate_limit_store_errors_total 5.0" in metrics
    assert 'aimesh_rate_limited_total{limit="rpm",scope="user"} 1.0' in metrics
    assert any("rate-limit store unreachable" in r.getMessage() for r in caplog.records)


async def test_spending_tokens_during_an_outage_never_fails_the_answer() -> None:
    # Closed policy, Redis gone between admission and the end of the work: the answer stands.
    settings = Settings(
        data_dir="/nonexistent-unused",
        redis_url=f"redis://127.0.0.1:{_free_port()}/0",
        rate_limit_rpm=60,
        rate_limit_tpm=1000,
        rate_limit_redis_failure="closed",
    )
    metrics = HttpMetrics()
    redis = Redis.from_url(settings.redis_url.get_secret_value())  # type: ignore[union-attr]
    limiter = RateLimiter(settings, metrics, redis)
    who = _caller("spent")
    await limiter.charge(who, 500)  # no exception
    with pytest.raises(HTTPException) as refused:
        await limiter.admit(_request(), who)
    assert refused.value.status_code == 503
    assert metrics.limiter_errors._value.get() == 2
    await limiter.close()
    await redis.aclose()


# ---------------------------------------------------------------- leases (Redis)


async def test_a_check_far_from_the_limit_leases_and_a_refund_gives_back(
    shared_redis: tuple[Redis, str],
) -> None:
    redis, prefix = shared_redis
    buckets = RedisBuckets(redis)
    rpm = Bucket(f"{prefix}rpm", 60, 1)  # refills one per second: the figures hold
    granted = await buckets.run("check", [rpm], lease_max=10, lease_min=8)
    # 59 left after this request: a lease of min(10, 59 // 8) = 7, charged at once.
    assert granted.allowed
    assert granted.leased == 7
    assert granted.remaining == [59 - 7]
    back = await buckets.run("check", [Bucket(rpm.key, 60, 1, refund=7)], lease_max=0)
    assert back.leased == 0
    assert back.remaining[0] in (58, 59)  # the 7 are back; one more second may have refilled


async def test_no_lease_near_a_limit_or_with_half_a_token_budget_spent(
    shared_redis: tuple[Redis, str],
) -> None:
    redis, prefix = shared_redis
    buckets = RedisBuckets(redis)
    rpm = Bucket(f"{prefix}rpm", 60, 1)
    near = await buckets.run("check", [Bucket(rpm.key, 60, 50)])  # spend 50 of 60
    assert near.allowed
    # 10 - 1 = 9 left: at least 16 must remain for a lease here.
    assert (await buckets.run("check", [rpm], lease_max=10, lease_min=16)).leased == 0
    tpm = Bucket(f"{prefix}tpm", 1000, 0)
    far = Bucket(f"{prefix}rpm2", 600, 1)
    assert (await buckets.run("check", [far, tpm], lease_max=10, lease_min=8)).leased == 10
    await buckets.run("charge", [Bucket(tpm.key, 1000, 600)])  # 400 tokens left of 1000
    assert (await buckets.run("check", [far, tpm], lease_max=10, lease_min=8)).leased == 0


def _limiter(redis: Redis, prefix: str, rpm: int, lease: int) -> RateLimiter:
    settings = Settings(
        data_dir="/nonexistent-unused",
        redis_key_prefix=prefix,
        rate_limit_rpm=rpm,
        rate_limit_lease=lease,
    )
    return RateLimiter(settings, HttpMetrics(), redis, lease_min_remaining=8)


def _request() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": []})


async def _admitted(limiter: RateLimiter, who: Principal) -> bool:
    try:
        await limiter.admit(_request(), who)
    except HTTPException as refused:
        if refused.status_code != 429:
            raise
        return False
    return True


def _caller(subject: str) -> Principal:
    return Principal(subject, "leases", frozenset({Role.USER}), "jwt")


def _refill_bound(rpm: int, started: float) -> int:
    """How many requests a bucket of ``rpm`` can have refilled since ``started``."""
    return math.ceil((time.monotonic() - started) * rpm / 60) + 1


async def test_replicas_with_leases_never_pass_the_limit(shared_redis: tuple[Redis, str]) -> None:
    redis, prefix = shared_redis
    replicas = [_limiter(redis, prefix, 120, 16) for _ in range(2)]
    calls = 0
    for limiter in replicas:
        assert limiter.remote is not None
        run = limiter.remote.run

        async def counted(*args: Any, run: Any = run, **kwargs: Any) -> Verdict:
            nonlocal calls
            calls += 1
            verdict: Verdict = await run(*args, **kwargs)
            return verdict

        limiter.remote.run = counted  # type: ignore[method-assign]
    who = _caller("alternating")
    started = time.monotonic()
    admitted: list[bool] = []
    calls_before_refusal: int | None = None
    for i in range(300):
        before = calls
        admitted.append(await _admitted(replicas[i % 2], who))
        if not admitted[-1] and calls_before_refusal is None:
            calls_before_refusal = before
    assert 120 - 2 * 16 <= sum(admitted) <= 120 + _refill_bound(120, started)
    # Most requests were admitted on leased credit, without a Redis call of their own.
    assert calls_before_refusal is not None
    assert calls_before_refusal < sum(admitted) / 2
    for limiter in replicas:
        await limiter.close()
    # Given back at close: a strict replica (no leases) finds exactly what is left.
    strict = _limiter(redis, prefix, 120, 0)
    more = 0
    while await _admitted(strict, who):
        more += 1
    assert 120 <= sum(admitted) + more <= 120 + _refill_bound(120, started)


async def test_unused_leased_requests_are_swept_back(shared_redis: tuple[Redis, str]) -> None:
    redis, prefix = shared_redis
    holder = _limiter(redis, prefix, 120, 16)
    holder.LEASE_SECONDS = 0.2
    who = _caller("sweep")
    started = time.monotonic()
    request = _request()
    for _ in range(3):
        await holder.admit(request, who)
    assert request.state.rate_limit[1] == 117  # the RateLimit-Remaining of the third
    assert holder._leases  # credits held (charged in Redis already)
    for _ in range(200):  # the sweep runs every LEASE_SECONDS
        if not holder._leases:
            break
        await asyncio.sleep(0.05)
    assert not holder._leases
    strict = _limiter(redis, prefix, 120, 0)
    more = 0
    while await _admitted(strict, who):
        more += 1
    assert 117 <= more <= 117 + _refill_bound(120, started)
    await holder.close()


async def test_a_spent_token_budget_ends_the_lease(shared_redis: tuple[Redis, str]) -> None:
    redis, prefix = shared_redis
    settings = Settings(
        data_dir="/nonexistent-unused",
        redis_key_prefix=prefix,
        rate_limit_rpm=600,
        rate_limit_tpm=1000,
        rate_limit_lease=16,
    )
    limiter = RateLimiter(settings, HttpMetrics(), redis, lease_min_remaining=8)
    who = _caller("tokens")
    await limiter.admit(_request(), who)
    assert limiter._leases[limiter._who(who)].credits > 0
    await limiter.charge(who, 700)  # 300 tokens left: under half the budget
    await limiter.admit(_request(), who)  # asks Redis again, and gets no new lease
    lease = limiter._leases.get(limiter._who(who))
    assert lease is None or lease.credits == 0
    await limiter.close()


# ---------------------------------------------------------------- tenant budgets


async def test_a_tenant_budget_is_shared_by_all_its_callers(fake_mesh: FakeMesh) -> None:
    # Default tenant budget 5 requests a minute; each caller alone could do 100.
    app = create_app(fake_mesh.settings(rate_limit_rpm=100, tenant_rate_limit_rpm=5))
    tenant = f"tb-{uuid.uuid4().hex[:8]}"
    callers = [bearer(token(tenant, ["user"], subject=f"u{i}")) for i in range(3)]
    async with running(app) as client:
        statuses = [
            (await client.get("/v1/models", headers=callers[i % 3])).status_code for i in range(8)
        ]
        assert statuses == [200] * 5 + [429] * 3
        metrics = (await client.get("/metrics")).text
        assert 'aimesh_rate_limited_total{limit="rpm",scope="tenant"} 3.0' in metrics
        # Another tenant has its own budget.
        other = bearer(token(f"other-{tenant}", ["user"]))
        assert (await client.get("/v1/models", headers=other)).status_code == 200

        # An operator override for a tenant replaces the default.
        small = f"small-{tenant}"
        override = await client.put(
            f"/v1/admin/tenants/{small}/limits",
            json={"rpm": 2, "tpm": None},
            headers=bearer(ADMIN_KEY),
        )
        assert override.status_code == 204
        callers = [bearer(token(small, ["user"], subject=f"u{i}")) for i in range(3)]
        statuses = [(await client.get("/v1/models", headers=c)).status_code for c in callers]
        assert statuses == [200, 200, 429]


async def test_a_tenant_token_budget_refuses_once_spent(fake_mesh: FakeMesh) -> None:
    app = create_app(fake_mesh.settings(tenant_rate_limit_tpm=30))
    tenant = f"tt-{uuid.uuid4().hex[:8]}"
    chat = {"model": "default", "messages": [{"role": "user", "content": "count my tokens"}]}
    async with running(app) as client:
        spent: list[int] = []
        for i in range(20):
            headers = bearer(token(tenant, ["user"], subject=f"u{i % 2}"))
            response = await client.post("/v1/chat/completions", json=chat, headers=headers)
            if response.status_code != 200:
                break
            spent.append(response.json()["usage"]["total_tokens"])
        metrics = (await client.get("/metrics")).text
    # Two callers, one budget: admitted while the tenant had tokens left, then refused.
    assert response.status_code == 429, response.text
    assert 'aimesh_rate_limited_total{limit="tpm",scope="tenant"} 1.0' in metrics
    assert sum(spent[:-1]) < 30 <= sum(spent), spent


async def test_local_buckets_forget_callers_whose_period_has_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    buckets = LocalBuckets()
    clock = [1_000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    for index in range(100):
        verdict = await buckets.run("check", [Bucket(f"caller-{index}", limit=60, cost=1)])
        assert verdict.allowed
    assert len(buckets) == 100
    # A second later the 100 buckets still hold state (each is one request into its minute).
    clock[0] += 1
    await buckets.run("check", [Bucket("late", limit=60, cost=1)])
    assert len(buckets) == 101

    # After a whole period every one of them is back to empty: the next call sweeps them.
    clock[0] += 61
    verdict = await buckets.run("check", [Bucket("caller-0", limit=60, cost=1)])
    assert verdict.allowed
    assert verdict.remaining == [59]
    assert len(buckets) == 1

    metrics = HttpMetrics()
    limiter = RateLimiter(Settings(), metrics, None)
    await limiter.local.run("check", [Bucket("x", limit=5, cost=1)])
    value = metrics.registry.get_sample_value("aimesh_rate_limit_local_entries", {"kind": "bucket"})
    assert value == 1


async def test_tenant_limit_cache_drops_tenants_not_seen_lately() -> None:
    """Issue 28: one entry per tenant seen within CACHE_SECONDS, not per tenant ever seen."""
    from aimesh_gateway.limits.ratelimit import TenantLimitSource

    loads: list[str] = []

    async def load(tenant: str) -> tuple[int | None, int | None] | None:
        loads.append(tenant)
        return (10, None) if tenant == "t0" else None

    source = TenantLimitSource(load)
    for index in range(100):
        await source.get(f"t{index}")
    assert len(source) == 100
    assert await source.get("t0") == (10, None)
    assert loads.count("t0") == 1  # served from the cache
    now = time.monotonic()
    source.sweep(now)
    assert len(source) == 100
    source.sweep(now + source.CACHE_SECONDS)
    assert len(source) == 0
    assert await source.get("t0") == (10, None)
    assert loads.count("t0") == 2
