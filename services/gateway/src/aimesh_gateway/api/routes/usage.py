"""Token usage of the caller's tenant (admin): per key or user, per day, in total."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from aimesh_gateway.api.deps import API_PREFIX, AdminPrincipal, DbSessionsDep, UsageMeterDep
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.schemas.problem import COMMON_ERRORS
from aimesh_gateway.schemas.usage import UsageByDay, UsageByKey, UsageReport, UsageTotals
from aimesh_gateway.stores.usage_report import UsageRow, usage_summary, window_start

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"], route_class=CheckedJSONRoute)


def _totals(row: UsageRow) -> UsageTotals:
    return UsageTotals(
        requests=row.requests,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
    )


@router.get("/usage", responses=COMMON_ERRORS, summary="Token usage of the tenant")
async def tenant_usage(
    principal: AdminPrincipal,
    sessions: DbSessionsDep,
    meter: UsageMeterDep,
    days: Annotated[
        int, Query(ge=1, le=366, description="The last N UTC days, today included.")
    ] = 7,
) -> UsageReport:
    await meter.drain()  # records are written off the request path: count the pending ones
    summary = await usage_summary(sessions, principal.tenant_id, window_start(days))
    return UsageReport(
        by_key=[UsageByKey(subject=row.key, **_totals(row).model_dump()) for row in summary.by_key],
        by_day=[UsageByDay(day=row.key, **_totals(row).model_dump()) for row in summary.by_day],
        total=_totals(summary.total),
    )
