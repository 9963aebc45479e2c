"""OpenAI-compatible embeddings over the embedding service.

The model name must be the one the embedding service reports (also listed by GET /v1/models);
it is read with the service's Info call and cached for a minute. Vectors are returned as float
arrays, or, with ``encoding_format=base64`` (what the official SDK asks for by default), as
base64 of their little-endian float32 bytes.
"""

from __future__ import annotations

import base64
import struct
import time

from fastapi import APIRouter, HTTPException, Request, Response

from aimesh.embedding.v1 import embedding_pb2
from aimesh_gateway.api.deps import (
    API_PREFIX,
    CacheDep,
    Upstream,
    UpstreamDep,
    UsageDep,
    UserPrincipal,
)
from aimesh_gateway.api.tokenids import decode_token_ids
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.schemas.embeddings import (
    EmbeddingItem,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
)
from aimesh_gateway.schemas.problem import COMMON_ERRORS, problem_doc
from aimesh_gateway.state import state_of

router = APIRouter(prefix=API_PREFIX, tags=["openai"], route_class=CheckedJSONRoute)


async def embedding_info(request: Request, upstream: Upstream) -> embedding_pb2.InfoResponse:
    """The embedding model's Info from the app's cache (refreshed in the background when
    old); asked for directly only while none was ever fetched, as this route needs it."""
    cache = state_of(request.app).embedding_info
    cache.refresh(upstream.embedding)
    info = cache.current()
    if info is not None:
        return info
    info = await upstream.embedding.Info(
        embedding_pb2.InfoRequest(), timeout=upstream.timeout, metadata=upstream.metadata
    )
    cache.fetched = (time.monotonic(), info)
    return info


@router.post(
    "/embeddings",
    responses={**COMMON_ERRORS, 404: problem_doc("Unknown embedding model.")},
    response_model=EmbeddingList,
    summary="Create embeddings",
)
async def create_embeddings(
    request: Request,
    body: EmbeddingRequest,
    principal: UserPrincipal,
    upstream: UpstreamDep,
    usage_meter: UsageDep,
    cache: CacheDep,
) -> EmbeddingList | Response:
    """One L2-normalized vector per input, in order (OpenAI ``/v1/embeddings``). Answers are
    cached (``X-Cache: hit``, no tokens charged); ``Cache-Control: no-cache`` skips the cache."""
    if (refused := body.refused()) is not None:
        raise HTTPException(400, refused)
    info = await embedding_info(request, upstream)
    if body.model != info.model:
        raise HTTPException(
            404, f"model {body.model!r} does not exist; the embedding model is {info.model!r}"
        )
    payload = body.model_dump(mode="json", exclude=set(body.model_extra or ()))
    key, cached = await cache.lookup(body.model, payload)
    if cached is not None:
        return cached
    reply = await upstream.embedding.Embed(
        embedding_pb2.EmbedRequest(
            inputs=body.texts(decode_token_ids),
            truncate=body.truncate,
            dimensions=body.dimensions or 0,
        ),
        timeout=upstream.timeout,
        metadata=upstream.metadata,
    )
    data: list[EmbeddingItem] = []
    for index, item in enumerate(reply.embeddings):
        vector: list[float] | str
        if body.encoding_format == "base64":
            # Little-endian float32, as OpenAI's base64 format (no numpy in the image).
            raw = struct.pack(f"<{len(item.values)}f", *item.values)
            vector = base64.b64encode(raw).decode("ascii")
        else:
            vector = list(item.values)
        data.append(EmbeddingItem(index=index, embedding=vector))
    await usage_meter.record(reply.model, reply.usage.prompt_tokens, 0)
    embeddings = EmbeddingList(
        data=data,
        model=reply.model,
        usage=EmbeddingUsage(
            prompt_tokens=reply.usage.prompt_tokens, total_tokens=reply.usage.total_tokens
        ),
    )
    await cache.store(key, embeddings)
    return embeddings
