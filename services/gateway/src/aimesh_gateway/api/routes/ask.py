"""Question answering with citations (llm-router, which retrieves through retrieval)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from aimesh.llm.v1 import llm_pb2
from aimesh_common.structs import to_struct
from aimesh_gateway.api.deps import API_PREFIX, UpstreamDep, UsageDep, UserPrincipal
from aimesh_gateway.api.task_stream import STREAM_DESCRIPTION, event_stream, gather_answer
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.limits.budgets import FILL_CONTEXT
from aimesh_gateway.limits.http import CANCEL_ON_DISCONNECT_EXTRA
from aimesh_gateway.schemas.ask import AskRequest, AskResponse, Citation
from aimesh_gateway.schemas.common import Usage
from aimesh_gateway.schemas.problem import COMMON_ERRORS, NOT_FOUND, problem_doc

router = APIRouter(prefix=API_PREFIX, tags=["generation"], route_class=CheckedJSONRoute)


@router.post(
    "/ask",
    openapi_extra={CANCEL_ON_DISCONNECT_EXTRA: True},
    responses={
        **COMMON_ERRORS,
        **NOT_FOUND,
        409: problem_doc("rerank asked for without a reranker configured."),
        200: {"description": STREAM_DESCRIPTION, "content": {"text/event-stream": {}}},
    },
    response_model=AskResponse,
    summary="Answer from a collection",
)
async def ask(
    body: AskRequest,
    principal: UserPrincipal,
    upstream: UpstreamDep,
    usage_meter: UsageDep,
    http_request: Request,
) -> AskResponse | StreamingResponse:
    """Retrieve sources from the collection and answer citing them ("[1]" is source 1)."""
    request = llm_pb2.AnswerRequest(
        question=body.question,
        collection=body.collection,
        tenant_id=principal.tenant_id,
        top_k=body.top_k,
        model=body.model or "",
        filter=to_struct(body.filter),
    )
    if body.rerank is not None:
        request.rerank = body.rerank
    # Sources are packed into the alias's context window: the prompt may fill it.
    await usage_meter.reserve(body.model or "", "qa", FILL_CONTEXT, 0)
    if body.stream:
        return await event_stream(
            upstream.llm_router.StreamAnswer(
                request, timeout=upstream.timeout, metadata=upstream.metadata
            ),
            usage_meter,
            request=http_request,
            model=body.model or "",
        )
    reply = await gather_answer(
        upstream.llm_router.StreamAnswer(
            request, timeout=upstream.timeout, metadata=upstream.metadata
        ),
        usage_meter,
        body.model or "",
    )
    return AskResponse(
        answer=reply.answer,
        citations=[Citation.from_proto(citation) for citation in reply.citations],
        model=reply.model,
        usage=Usage.from_proto(reply.usage),
        provider=reply.provider,
        prompt_version=reply.prompt_version,
        fallback_reason=reply.fallback_reason,
        replaced_model=reply.replaced_model,
    )
