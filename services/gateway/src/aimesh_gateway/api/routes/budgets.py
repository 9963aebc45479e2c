"""Admin API (role admin): budgets in money of the caller's tenant, with each budget's
spend in its current window and the window's forecast. Another tenant's budget answers
404, as if it did not exist."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from sqlalchemy import select

from aimesh_gateway.api.deps import (
    API_PREFIX,
    AdminPrincipal,
    BudgetsDep,
    DbSessionsDep,
    KeyStoreDep,
)
from aimesh_gateway.auth.security import Principal
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.db.models import Budget, utcnow
from aimesh_gateway.limits.budgets import MICROS, Budgets, budget_subject
from aimesh_gateway.limits.http import MAX_BODY_EXTRA
from aimesh_gateway.schemas.budgets import (
    BudgetCreate,
    BudgetInfo,
    BudgetList,
    BudgetSpend,
    BudgetUpdate,
)
from aimesh_gateway.schemas.problem import COMMON_ERRORS, problem_doc

router = APIRouter(
    prefix=f"{API_PREFIX}/admin/budgets", tags=["admin"], route_class=CheckedJSONRoute
)
SMALL_BODY = {MAX_BODY_EXTRA: 16 * 1024}
BUDGET_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem_doc("No such budget in the caller's tenant.")
}
BudgetId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="Budget id.")]


async def _info(budget: Budget, budgets: Budgets | None = None) -> BudgetInfo:
    spend = None
    if budgets is not None:
        spend = BudgetSpend(**await budgets.forecast(budget))
    subject = budget.subject.removeprefix("key:") if budget.scope == "key" else budget.subject
    return BudgetInfo(
        id=budget.id,
        tenant_id=budget.tenant_id,
        name=budget.name,
        scope=budget.scope,
        subject=subject,
        model=budget.model,
        limit_usd=budget.limit_micros / MICROS,
        window=budget.period,
        rolling_seconds=budget.rolling_seconds,
        mode=budget.mode,
        created_at=budget.created_at,
        updated_at=budget.updated_at,
        spend=spend,
    )


async def _owned(sessions: DbSessionsDep, principal: Principal, budget_id: str) -> Budget:
    async with sessions() as session:
        budget = await session.get(Budget, budget_id)
    if budget is None or budget.tenant_id != principal.tenant_id:
        raise HTTPException(404, f"no budget {budget_id} in this tenant")
    return budget


@router.post(
    "",
    status_code=201,
    openapi_extra=SMALL_BODY,
    responses={**COMMON_ERRORS, 422: problem_doc("Invalid fields, or no such API key.")},
    summary="Create a budget",
)
async def create_budget(
    body: BudgetCreate,
    principal: AdminPrincipal,
    sessions: DbSessionsDep,
    budgets: BudgetsDep,
    keys: KeyStoreDep,
) -> BudgetInfo:
    if body.scope == "key":
        key_id = body.subject.removeprefix("key:")
        if await keys.get(principal.tenant_id, key_id) is None:
            # A budget no call could match would cap nothing, silently.
            raise HTTPException(422, f"subject: no API key {key_id!r} in this tenant")
    now = utcnow()
    budget = Budget(
        id=uuid.uuid4().hex,
        tenant_id=principal.tenant_id,
        scope=body.scope,
        subject=budget_subject(body.scope, body.subject),
        model=body.model,
        period=body.window,
        rolling_seconds=body.rolling_seconds,
        limit_micros=round(body.limit_usd * MICROS),
        mode=body.mode,
        name=body.name,
        created_at=now,
        updated_at=now,
    )
    async with sessions.begin() as session:
        session.add(budget)
    budgets.budgets.forget(principal.tenant_id)
    return await _info(budget)


@router.get("", responses={**COMMON_ERRORS}, summary="List the tenant's budgets and spend")
async def list_budgets(
    principal: AdminPrincipal, sessions: DbSessionsDep, budgets: BudgetsDep
) -> BudgetList:
    async with sessions() as session:
        rows = (
            await session.scalars(
                select(Budget)
                .where(Budget.tenant_id == principal.tenant_id)
                .order_by(Budget.created_at)
            )
        ).all()
    return BudgetList(budgets=[await _info(row, budgets) for row in rows])


@router.get(
    "/{budget_id}",
    responses={**COMMON_ERRORS, **BUDGET_NOT_FOUND},
    summary="Show a budget, its spend and forecast",
)
async def get_budget(
    budget_id: BudgetId, principal: AdminPrincipal, sessions: DbSessionsDep, budgets: BudgetsDep
) -> BudgetInfo:
    return await _info(await _owned(sessions, principal, budget_id), budgets)


@router.patch(
    "/{budget_id}",
    openapi_extra=SMALL_BODY,
    responses={**COMMON_ERRORS, **BUDGET_NOT_FOUND},
    summary="Change a budget's name, limit or mode",
)
async def update_budget(
    budget_id: BudgetId,
    body: BudgetUpdate,
    principal: AdminPrincipal,
    sessions: DbSessionsDep,
    budgets: BudgetsDep,
) -> BudgetInfo:
    async with sessions.begin() as session:
        budget = await session.get(Budget, budget_id)
        if budget is None or budget.tenant_id != principal.tenant_id:
            raise HTTPException(404, f"no budget {budget_id} in this tenant")
        if body.name is not None:
            budget.name = body.name
        if body.limit_usd is not None:
            budget.limit_micros = round(body.limit_usd * MICROS)
        if body.mode is not None:
            budget.mode = body.mode
        budget.updated_at = utcnow()
    budgets.budgets.forget(principal.tenant_id)
    return await _info(budget, budgets)


@router.delete(
    "/{budget_id}",
    status_code=204,
    responses={**COMMON_ERRORS, **BUDGET_NOT_FOUND},
    summary="Delete a budget",
)
async def delete_budget(
    budget_id: BudgetId, principal: AdminPrincipal, sessions: DbSessionsDep, budgets: BudgetsDep
) -> Response:
    async with sessions.begin() as session:
        budget = await session.get(Budget, budget_id)
        if budget is None or budget.tenant_id != principal.tenant_id:
            raise HTTPException(404, f"no budget {budget_id} in this tenant")
        await session.delete(budget)
    budgets.budgets.forget(principal.tenant_id)
    await budgets.reset_counters(budget)
    return Response(status_code=204)
