"""The model aliases, in the OpenAI list shape (llm-router)."""

from __future__ import annotations

from fastapi import APIRouter

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.api.deps import API_PREFIX, BackendsDep, CallOptionsDep, UserPrincipal
from aimesh_gateway.schemas.models import ModelCard, ModelList
from aimesh_gateway.schemas.problem import COMMON_ERRORS

router = APIRouter(prefix=API_PREFIX, tags=["openai"])


@router.get("/models", responses=COMMON_ERRORS, summary="List model aliases")
async def list_models(
    principal: UserPrincipal, backends: BackendsDep, call: CallOptionsDep
) -> ModelList:
    reply = await backends.llm_router.ListModels(
        llm_pb2.ListModelsRequest(), timeout=call.timeout, metadata=call.metadata
    )
    return ModelList(
        data=[
            ModelCard(
                id=model.id, description=model.description, context_window=model.context_window
            )
            for model in reply.models
        ]
    )
