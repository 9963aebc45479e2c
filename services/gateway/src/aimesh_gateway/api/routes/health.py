"""Probes and metrics (no authentication: kubelet and Prometheus call them)."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aimesh_gateway.api.deps import BackendsDep, MetricsDep, SettingsDep
from aimesh_gateway.core.errors import problem_response
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.schemas.problem import problem_doc
from aimesh_gateway.state import state_of

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
        "AIMESH_BUDGET_REDIS_FAILURE=open, let them through uncounted; local: no Redis, "
        "budgets are checked in process (one worker).",
    )


async def _budget_state(redis: Redis | None, wait: float) -> BudgetState:
    """Whether budgets can be checked exactly: Redis answers a PING in time."""
    if redis is None:
        return "local"
    try:
        async with asyncio.timeout(wait):
            await redis.ping()
    except (RedisError, TimeoutError, OSError):
        return "degraded"
    return "ok"


@router.get("/healthz", summary="Liveness: 200 while the process runs")
async def healthz() -> Liveness:
    return Liveness()


@router.get(
    "/readyz",
    summary="Readiness: 200 when every backend reports SERVING",
    responses={503: problem_doc("A backend is not serving; `backends` tells which.")},
    response_model=Readiness,
)
async def readyz(
    request: Request, backends: BackendsDep, settings: SettingsDep
) -> Readiness | JSONResponse:
    states, budgets = await asyncio.gather(
        backends.health(settings.readiness_timeout_seconds),
        _budget_state(state_of(request.app).redis, settings.readiness_timeout_seconds),
    )
    if all(states.values()):
        return Readiness(backends=states, budgets=budgets)
    down = sorted(name for name, serving in states.items() if not serving)
    return problem_response(
        request,
        503,
        f"backends not serving: {', '.join(down)}",
        extra={"backends": states, "budgets": budgets},
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(registry: MetricsDep) -> Response:
    body, content_type = registry.render()
    return Response(body, media_type=content_type)
