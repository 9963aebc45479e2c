"""Probes and metrics (no authentication: kubelet and Prometheus call them)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from aimesh_gateway.api.deps import BackendsDep, MetricsDep, SettingsDep
from aimesh_gateway.core.errors import problem_response
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.schemas.problem import problem_doc

router = APIRouter(tags=["operations"], route_class=CheckedJSONRoute)


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    backends: dict[str, bool]


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
    states = await backends.health(settings.readiness_timeout_seconds)
    if all(states.values()):
        return Readiness(backends=states)
    down = sorted(name for name, serving in states.items() if not serving)
    return problem_response(
        request,
        503,
        f"backends not serving: {', '.join(down)}",
        extra={"backends": states},
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(registry: MetricsDep) -> Response:
    body, content_type = registry.render()
    return Response(body, media_type=content_type)
