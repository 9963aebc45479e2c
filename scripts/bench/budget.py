"""What a budget reservation costs a request: chat completions with and without budgets.

``python -m scripts.bench.budget`` (from the repository root, ``PYTHONPATH=.``; ``make
bench-budget``) starts the real LLM router in process (the extractive ``local`` provider,
priced, so no model time hides the overhead) and the gateway app on the real Redis
(``--redis``, a key prefix of its own, deleted afterwards) and a SQLite file, then sends
``--requests`` chat completions per side, alternating:

* tenant ``free``: no budget (the gateway asks nothing more than before);
* tenant ``capped``: three hard budgets apply to every call (its user's rolling hour, its
  tenant's month and its tenant's day on the alias), so each call runs the reservation
  script over three budgets before the router and the settlement script after.

It also times the reservation and settlement alone (``Budgets.reserve`` + ``Hold.settle``,
the two Redis scripts) in the same run. Figures: p50 and p95 per request in ms, and the
difference of the p50s: the reservation's cost per request. Written to docs/benchmarks.md
between the budget markers (``--no-write`` prints only).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
from redis.asyncio import Redis

from aimesh_gateway.core.config import Settings, default_database_url
from aimesh_gateway.main import create_app
from aimesh_gateway.state import state_of
from aimesh_llm_router.config import Settings as RouterSettings
from aimesh_llm_router.modelconfig import validate_models_config
from aimesh_llm_router.providers import PROVIDERS
from aimesh_llm_router.server import build_dependencies, create_server
from scripts.bench.doc import write_section
from tests.conftest import make_jwt

SECRET = "bench-jwt-secret-long-enough-for-hs256-hs384-and-hs512-0123456789"
MODELS: dict[str, Any] = {
    "models": {
        "default": {
            "provider": "local",
            "price_per_1k_input": 0.15,
            "price_per_1k_output": 0.6,
            "max_tokens": 64,
        }
    }
}
BODY = {"model": "default", "max_tokens": 32, "messages": [{"role": "user", "content": "Hi"}]}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(requests: int, redis_url: str) -> dict[str, tuple[float, float]]:
    """p50 and p95 in ms: ``free`` and ``capped`` requests, and ``reserve+settle`` alone."""
    config = validate_models_config(MODELS, "bench", frozenset(PROVIDERS), environ={})
    router_settings = RouterSettings(port=0, host="127.0.0.1", metrics_port=None)
    unused = [grpc.aio.insecure_channel("127.0.0.1:1") for _ in range(2)]
    deps = build_dependencies(
        router_settings, config=config, retrieval_channel=unused[0], embedding_channel=unused[1]
    )
    router = create_server(router_settings, deps)
    await router.start()
    prefix = f"bench-budget-{uuid.uuid4().hex[:8]}:"
    data = Path(tempfile.mkdtemp(prefix="aimesh-bench-budget-"))
    settings = Settings(
        jwt_secret=SECRET,
        llm_router_service_addr=f"127.0.0.1:{router.port}",
        retrieval_service_addr="127.0.0.1:1",
        embedding_service_addr="127.0.0.1:1",
        redis_url=redis_url,
        redis_key_prefix=prefix,
        database_url=default_database_url(data),
        data_dir=data,
    )
    app = create_app(settings)
    results: dict[str, list[float]] = {"free": [], "capped": [], "reserve+settle": []}
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
                headers = {
                    tenant: {"Authorization": f"Bearer {make_jwt(SECRET, tenant=tenant)}"}
                    for tenant in ("free", "capped")
                }
                admin = {
                    "Authorization": "Bearer "
                    + make_jwt(SECRET, tenant="capped", roles=["admin"], subject="boss")
                }
                for budget in (
                    {"scope": "tenant", "window": "month"},
                    {"scope": "tenant", "window": "day", "model": "default"},
                    {
                        "scope": "user",
                        "subject": "tester",
                        "window": "rolling",
                        "rolling_seconds": 3600,
                    },
                ):
                    created = await http.post(
                        "/v1/admin/budgets", json={"limit_usd": 1000, **budget}, headers=admin
                    )
                    created.raise_for_status()
                for tenant in ("free", "capped"):  # warm-up: caches, scripts, seeding
                    (await http.post("/v1/chat/completions", json=BODY, headers=headers[tenant]))
                for _ in range(requests):
                    for tenant in ("free", "capped"):
                        start = time.perf_counter()
                        response = await http.post(
                            "/v1/chat/completions", json=BODY, headers=headers[tenant]
                        )
                        results[tenant].append((time.perf_counter() - start) * 1000)
                        response.raise_for_status()
                budgets = state_of(app).budgets
                principal = state_of(app).authenticator
                caller = await principal.authenticate(make_jwt(SECRET, tenant="capped"))
                for _ in range(requests):
                    start = time.perf_counter()
                    hold = await budgets.reserve(caller, "default", "chat", 20, 32)
                    assert hold is not None
                    await hold.settle(0.00001)
                    results["reserve+settle"].append((time.perf_counter() - start) * 1000)
    finally:
        await router.stop(0)
        await deps.aclose()
        for channel in unused:
            await channel.close()
        redis = Redis.from_url(redis_url)
        keys = [key async for key in redis.scan_iter(f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    return {name: (_percentile(v, 0.5), _percentile(v, 0.95)) for name, v in results.items()}


def report(figures: dict[str, tuple[float, float]], requests: int) -> str:
    rows = [
        "| requests | p50 ms | p95 ms |",
        "|---|---|---|",
        f"| chat completion, no budget | {figures['free'][0]:.2f} | {figures['free'][1]:.2f} |",
        f"| chat completion, 3 hard budgets | {figures['capped'][0]:.2f} | "
        f"{figures['capped'][1]:.2f} |",
        f"| reserve + settle alone (3 budgets) | {figures['reserve+settle'][0]:.2f} | "
        f"{figures['reserve+settle'][1]:.2f} |",
    ]
    overhead = figures["capped"][0] - figures["free"][0]
    return (
        f"`make bench-budget`: {requests} requests per row, alternating, one process, the "
        "real Redis and the real router (extractive provider).\n\n"
        + "\n".join(rows)
        + f"\n\nThe reservation costs a request {overhead:.2f} ms at p50 (capped - free)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(run(args.requests, args.redis))
    section = report(figures, args.requests)
    print(section)
    if not args.no_write:
        write_section("budget", "Budgets: what a reservation costs a request", section)


if __name__ == "__main__":
    main()
