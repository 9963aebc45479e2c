"""Question answering with citations (llm-router, which retrieves through retrieval)."""

from __future__ import annotations

from fastapi import APIRouter

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.api.deps import API_PREFIX, BackendsDep, CallOptionsDep, UserPrincipal
from aimesh_gateway.core.structs import from_struct, score, to_struct
from aimesh_gateway.schemas.ask import AskRequest, AskResponse, Citation
from aimesh_gateway.schemas.common import Usage
from aimesh_gateway.schemas.problem import COMMON_ERRORS, NOT_FOUND

router = APIRouter(prefix=API_PREFIX, tags=["generation"])


@router.post("/ask", responses={**COMMON_ERRORS, **NOT_FOUND}, summary="Answer from a collection")
async def ask(
    body: AskRequest, principal: UserPrincipal, backends: BackendsDep, call: CallOptionsDep
) -> AskResponse:
    """Retrieve sources from the collection and answer citing them ("[1]" is source 1)."""
    reply = await backends.llm_router.Answer(
        llm_pb2.AnswerRequest(
            question=body.question,
            collection=body.collection,
            tenant_id=principal.tenant_id,
            top_k=body.top_k,
            model=body.model,
            filter=to_struct(body.filter),
        ),
        timeout=call.timeout,
        metadata=call.metadata,
    )
    return AskResponse(
        answer=reply.answer,
        citations=[
            Citation(
                source=citation.source,
                document_id=citation.document_id,
                chunk_id=citation.chunk_id,
                text=citation.text,
                score=score(citation.score),
                metadata=from_struct(citation.metadata),
            )
            for citation in reply.citations
        ],
        model=reply.model,
        usage=Usage.from_proto(reply.usage),
    )
