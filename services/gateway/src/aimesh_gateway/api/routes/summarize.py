"""Summarization (llm-router)."""

from __future__ import annotations

from fastapi import APIRouter

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.api.deps import API_PREFIX, BackendsDep, CallOptionsDep, UserPrincipal
from aimesh_gateway.schemas.common import Usage
from aimesh_gateway.schemas.problem import COMMON_ERRORS
from aimesh_gateway.schemas.summarize import SummarizeRequest, SummarizeResponse

router = APIRouter(prefix=API_PREFIX, tags=["generation"])


@router.post("/summarize", responses=COMMON_ERRORS, summary="Summarize a text")
async def summarize(
    body: SummarizeRequest, principal: UserPrincipal, backends: BackendsDep, call: CallOptionsDep
) -> SummarizeResponse:
    reply = await backends.llm_router.Summarize(
        llm_pb2.SummarizeRequest(
            text=body.text,
            model=body.model,
            style=body.style,
            max_words=body.max_words or 0,
            tenant_id=principal.tenant_id,
        ),
        timeout=call.timeout,
        metadata=call.metadata,
    )
    return SummarizeResponse(
        summary=reply.summary, model=reply.model, usage=Usage.from_proto(reply.usage)
    )
