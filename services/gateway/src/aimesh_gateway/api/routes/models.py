"""The model aliases (llm-router) and the embedding model, in the OpenAI list shape."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.api.deps import API_PREFIX, UpstreamDep, UserPrincipal
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.schemas.models import ModelCard, ModelList
from aimesh_gateway.schemas.problem import COMMON_ERRORS
from aimesh_gateway.state import state_of

log = logging.getLogger("aimesh.gateway.models")

router = APIRouter(prefix=API_PREFIX, tags=["openai"], route_class=CheckedJSONRoute)


@router.get("/models", responses=COMMON_ERRORS, summary="List model aliases")
async def list_models(
    request: Request, principal: UserPrincipal, upstream: UpstreamDep
) -> ModelList:
    """The model aliases, then the embedding model (left out while the embedding service has
    not answered since the gateway started)."""
    # The embedding model's Info comes from the gateway's cache, refreshed in the background
    # with a short deadline (core/embedding_info.py): a hung embedding service holds up only
    # the listings of the first half second after a refresh starts with nothing cached.
    list_call = upstream.llm_router.ListModels(
        llm_pb2.ListModelsRequest(), timeout=upstream.timeout, metadata=upstream.metadata
    )
    cache = state_of(request.app).embedding_info
    refresh = cache.refresh(upstream.embedding)
    info = cache.current()
    if info is not None or refresh is None:
        # The usual case: one call, no extra tasks (this route is the gateway benchmark's).
        reply = await list_call
    else:
        reply, info = await asyncio.gather(list_call, cache.first(refresh))
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
