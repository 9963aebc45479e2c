"""Summarization (llm-router)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.api.deps import API_PREFIX, UpstreamDep, UsageDep, UserPrincipal
from aimesh_gateway.api.task_stream import STREAM_DESCRIPTION, event_stream, gather_summary
from aimesh_gateway.api.tokenids import count_tokens
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.limits.http import CANCEL_ON_DISCONNECT_EXTRA
from aimesh_gateway.schemas.common import Usage
from aimesh_gateway.schemas.problem import COMMON_ERRORS
from aimesh_gateway.schemas.summarize import SummarizeRequest, SummarizeResponse

# The summarize template around the text (instructions, style), generously.
SUMMARY_TEMPLATE_TOKENS = 256

router = APIRouter(prefix=API_PREFIX, tags=["generation"], route_class=CheckedJSONRoute)


@router.post(
    "/summarize",
    openapi_extra={CANCEL_ON_DISCONNECT_EXTRA: True},
    responses={
        **COMMON_ERRORS,
        200: {"description": STREAM_DESCRIPTION, "content": {"text/event-stream": {}}},
    },
    response_model=SummarizeResponse,
    summary="Summarize a text",
)
async def summarize(
    body: SummarizeRequest,
    principal: UserPrincipal,
    upstream: UpstreamDep,
    usage_meter: UsageDep,
    http_request: Request,
) -> SummarizeResponse | StreamingResponse:
    request = llm_pb2.SummarizeRequest(
        text=body.text,
        model=body.model or "",
        style=body.style,
        max_words=body.max_words or 0,
        tenant_id=principal.tenant_id,
    )
    if await usage_meter.budgeted():  # the text is counted only when a budget may apply
        prompt = count_tokens(body.text) + SUMMARY_TEMPLATE_TOKENS
        await usage_meter.reserve(body.model or "", "summarize", prompt, 0)
    if body.stream:
        return await event_stream(
            upstream.llm_router.StreamSummarize(
                request, timeout=upstream.timeout, metadata=upstream.metadata
            ),
            usage_meter,
            request=http_request,
            model=body.model or "",
        )
    reply = await gather_summary(
        upstream.llm_router.StreamSummarize(
            request, timeout=upstream.timeout, metadata=upstream.metadata
        ),
        usage_meter,
        body.model or "",
    )
    return SummarizeResponse(
        summary=reply.summary,
        model=reply.model,
        usage=Usage.from_proto(reply.usage),
        provider=reply.provider,
        prompt_version=reply.prompt_version,
    )
