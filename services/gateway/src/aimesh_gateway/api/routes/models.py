"""The model aliases (llm-router) and the embedding model, in the OpenAI list shape."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from fastapi import APIRouter, Request

from aimesh.embedding.v1 import embedding_pb2
from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.api.deps import API_PREFIX, Upstream, UpstreamDep, UserPrincipal
from aimesh_gateway.api.routes.embeddings import cached_embedding_info, embedding_info
from aimesh_gateway.schemas.models import ModelCard, ModelList
from aimesh_gateway.schemas.problem import COMMON_ERRORS
from aimesh_gateway.state import state_of

log = logging.getLogger("aimesh.gateway.models")

router = APIRouter(prefix=API_PREFIX, tags=["openai"])

# After the embedding service failed to answer Info, the list goes without the embedding model
# for this long before asking again (rather than one failing call and warning per request).
EMBEDDING_RETRY_SECONDS = 5.0


def _embedding_backing_off(request: Request) -> bool:
    failed_at = state_of(request.app).embedding_info.failed_at
    return failed_at is not None and time.monotonic() - failed_at < EMBEDDING_RETRY_SECONDS


async def _embedding_card_info(
    request: Request, upstream: Upstream
) -> embedding_pb2.InfoResponse | None:
    """The embedding model's Info, or None while the embedding service is failing."""
    if _embedding_backing_off(request):
        return None
    try:
        info = await embedding_info(request, upstream)
    except grpc.aio.AioRpcError as error:
        # The chat models stay listable while the embedding service is down.
        log.warning("embedding model not listed", extra={"grpc_code": error.code().name})
        state_of(request.app).embedding_info.failed_at = time.monotonic()
        return None
    state_of(request.app).embedding_info.failed_at = None
    return info


@router.get("/models", responses=COMMON_ERRORS, summary="List model aliases")
async def list_models(
    request: Request, principal: UserPrincipal, upstream: UpstreamDep
) -> ModelList:
    list_call = upstream.llm_router.ListModels(
        llm_pb2.ListModelsRequest(), timeout=upstream.timeout, metadata=upstream.metadata
    )
    info = cached_embedding_info(request)
    if info is not None or _embedding_backing_off(request):
        # The usual case: one call, no extra tasks (this route is the gateway benchmark's).
        reply = await list_call
    else:
        reply, info = await asyncio.gather(list_call, _embedding_card_info(request, upstream))
    cards = [
        ModelCard(
            id=model.id,
            description=model.description,
            context_window=model.context_window,
            default_for=list(model.default_for),
        )
        for model in reply.models
    ]
    if info is not None:
        cards.append(
            ModelCard(
                id=info.model,
                description=f"Embedding model ({info.dimension} dimensions, {info.backend})",
                context_window=info.max_input_tokens,
            )
        )
    return ModelList(data=cards)
