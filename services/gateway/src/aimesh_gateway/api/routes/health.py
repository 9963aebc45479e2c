"""Probes and metrics (no authentication: kubelet and Prometheus call them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aimesh_gateway.api.deps import BackendsDep, MetricsDep, RedisDep, SettingsDep
from aimesh_gateway.core.errors import problem_response
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.schemas.problem import problem_doc

router = APIRouter(tags=["operations"], route_class=CheckedJSONRoute)


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


BudgetState = Literal["ok", "degraded", "local"]


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    backends: dict[str, bool]
    budgets: BudgetState = Field(
        "ok",
        description="ok: budgets are checked in the shared Redis; degraded: Redis is "
        "unreachable, so hard budgets refuse calls (503) or, with "
        "AIMESH_BUDGET_REDIS_FAILURE=open, let them through uncounted (then `degraded` "
        "names budgets too); local: no Redis, budgets are checked in process (one worker).",
    )
    degraded: list[str] = Field(
        default_factory=list,
        description="Components unreachable while the gateway still serves without them "
        "(redis: rate limits fail open, the response cache is off; budgets: see `budgets`); "
        "see docs/operations.md.",
    )


async def _redis_reachable(redis: Redis, deadline_seconds: float) -> bool:
    try:
        async with asyncio.timeout(deadline_seconds):
            return bool(await redis.ping())
    except (RedisError, OSError, TimeoutError):
        return False


@router.get("/healthz", summary="Liveness: 200 while the process runs")
async def healthz() -> Liveness:
    return Liveness()


@router.get(
    "/readyz",
    summary="Readiness: 200 when every backend reports SERVING; `degraded` names what the "
    "gateway runs without",
    responses={
        503: problem_doc(
            "A backend is not serving (or Redis is down with rate_limit_redis_failure=closed); "
            "`backends` and `degraded` tell which."
        )
    },
    response_model=Readiness,
)
async def readyz(
    request: Request,
    backends: BackendsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    redis: RedisDep,
) -> Readiness | JSONResponse:
    timeout = settings.readiness_timeout_seconds
    checks: list[Awaitable[Any]] = [backends.health(timeout)]
    if redis is not None:
        checks.append(_redis_reachable(redis, timeout))
    results = await asyncio.gather(*checks)
    states: dict[str, bool] = results[0]
    components = dict(states)
    budgets: BudgetState = "local"  # no Redis: budgets are checked in process
    if redis is not None:
        components["redis"] = results[1]
        # Budgets live in the same Redis: they are degraded exactly when it is unreachable.
        components["budgets"] = results[1]
        budgets = "ok" if results[1] else "degraded"
    for name, up in components.items():
        metrics.degraded.labels(name).set(0 if up else 1)
    degraded = sorted(name for name, up in components.items() if not up)
    # Without Redis the gateway still serves (limits fail open by default, cache off, hard
    # budgets refuse or pass uncounted per their own setting, calls without budgets go on);
    # with limits failing closed every limited request would be a 503: not ready then.
    blocking = [name for name in degraded if name not in ("redis", "budgets")]
    if "redis" in degraded and settings.rate_limit_redis_failure == "closed":
        blocking.append("redis")
    if not blocking:
        return Readiness(backends=states, budgets=budgets, degraded=degraded)
    return problem_response(
        request,
        503,
        f"not serving: {', '.join(blocking)}",
        extra={"backends": states, "budgets": budgets, "degraded": degraded},
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(registry: MetricsDep) -> Response:
    body, content_type = registry.render()
    return Response(body, media_type=content_type)
