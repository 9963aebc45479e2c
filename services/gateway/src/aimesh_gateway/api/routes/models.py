"""The model aliases (llm-router) and the embedding model, in the OpenAI list shape."""

from __future__ import annotations

import asyncio
import logging

import grpc
from fastapi import APIRouter, Request

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.api.deps import API_PREFIX, BackendsDep, CallOptionsDep, UserPrincipal
from aimesh_gateway.api.routes.embeddings import embedding_info
from aimesh_gateway.schemas.models import ModelCard, ModelList
from aimesh_gateway.schemas.problem import COMMON_ERRORS

log = logging.getLogger("aimesh.gateway.models")

router = APIRouter(prefix=API_PREFIX, tags=["openai"])


@router.get("/models", responses=COMMON_ERRORS, summary="List model aliases")
async def list_models(
    request: Request, principal: UserPrincipal, backends: BackendsDep, call: CallOptionsDep
) -> ModelList:
    reply, info = await asyncio.gather(
        backends.llm_router.ListModels(
            llm_pb2.ListModelsRequest(), timeout=call.timeout, metadata=call.metadata
        ),
        embedding_info(request, backends, call),
        return_exceptions=True,
    )
    if isinstance(reply, BaseException):
        raise reply
    cards = [
        ModelCard(id=model.id, description=model.description, context_window=model.context_window)
        for model in reply.models
    ]
    if isinstance(info, grpc.aio.AioRpcError):
        # The chat models stay listable while the embedding service is down.
        log.warning("embedding model not listed", extra={"grpc_code": info.code().name})
    elif isinstance(info, BaseException):
        raise info
    else:
        cards.append(
            ModelCard(
                id=info.model,
                description=f"Embedding model ({info.dimension} dimensions, {info.backend})",
                context_window=info.max_input_tokens,
            )
        )
    return ModelList(data=cards)
