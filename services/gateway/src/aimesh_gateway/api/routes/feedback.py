"""Feedback on answers: users rate them, admins read the ratings and their summary.

An answer is named by the X-Request-ID of the request that produced it. Only answers of the
caller's tenant can be rated; any other id (another tenant's, a search, an unknown one)
answers 404 alike.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status

from aimesh_gateway.api.deps import (
    API_PREFIX,
    AdminPrincipal,
    FeedbackStoreDep,
    UserPrincipal,
)
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.db.models import Feedback
from aimesh_gateway.limits.http import MAX_BODY_EXTRA
from aimesh_gateway.schemas.feedback import (
    FeedbackAdminItem,
    FeedbackCreate,
    FeedbackItem,
    FeedbackList,
    FeedbackSummary,
    FeedbackSummaryRow,
    RatingFilter,
)
from aimesh_gateway.schemas.problem import COMMON_ERRORS, problem_doc
from aimesh_gateway.stores.feedback import UnknownAnswer

router = APIRouter(prefix=API_PREFIX, tags=["feedback"], route_class=CheckedJSONRoute)

ANSWER_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem_doc("No answer with this request id in the caller's tenant.")
}


def _item(row: Feedback) -> dict[str, Any]:
    return {
        "id": row.id,
        "request_id": row.request_id,
        "rating": row.rating,
        "comment": row.comment,
        "route": row.route,
        "model": row.model,
        "provider": row.provider,
        "prompt_version": row.prompt_version,
        "created_at": row.created_at,
    }


@router.post(
    "/feedback",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={MAX_BODY_EXTRA: 16 * 1024},
    responses={
        **COMMON_ERRORS,
        **ANSWER_NOT_FOUND,
        200: {"description": "The caller had rated this answer: the rating was replaced."},
    },
    summary="Rate an answer",
)
async def rate_answer(
    body: FeedbackCreate, principal: UserPrincipal, store: FeedbackStoreDep, response: Response
) -> FeedbackItem:
    """Rate the answer of a request (1 or -1, optional comment). 201 for a first rating,
    200 when it replaces the caller's earlier rating of the same answer."""
    try:
        row, created = await store.rate(principal, body.request_id, body.rating, body.comment)
    except UnknownAnswer:
        raise HTTPException(404, f"no answer with request id {body.request_id!r}") from None
    if not created:
        response.status_code = status.HTTP_200_OK
    return FeedbackItem(**_item(row))


@router.get("/admin/feedback", responses=COMMON_ERRORS, summary="Ratings of the tenant's answers")
async def list_feedback(
    principal: AdminPrincipal,
    store: FeedbackStoreDep,
    rating: Annotated[RatingFilter | None, Query(description="Only this rating.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FeedbackList:
    rows = await store.recent(principal.tenant_id, None if rating is None else int(rating), limit)
    return FeedbackList(data=[FeedbackAdminItem(**_item(row), subject=row.subject) for row in rows])


@router.get(
    "/admin/feedback/summary",
    responses=COMMON_ERRORS,
    summary="Ratings per route, model, provider and prompt version",
)
async def feedback_summary(principal: AdminPrincipal, store: FeedbackStoreDep) -> FeedbackSummary:
    rows = await store.summary(principal.tenant_id)
    return FeedbackSummary(
        data=[
            FeedbackSummaryRow(
                route=row.route,
                model=row.model,
                provider=row.provider,
                prompt_version=row.prompt_version,
                count=row.count,
                up=row.up,
                down=row.down,
                score=row.score,
            )
            for row in rows
        ]
    )
