"""Grounding in a collection: the retrieval search and the citations of its chunks,
shared by answers and grounded conversations."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.protobuf import struct_pb2

from aimesh.llm.v1 import llm_pb2
from aimesh.retrieval.v1 import retrieval_pb2
from aimesh_common.errors import from_rpc_error
from aimesh_llm_router.tasks.common import TaskDeps


@dataclass(frozen=True)
class Found:
    """What a search found: the chunks with text, best first, and the query's embedding
    when retrieval computed one (handed to the provider, so a question is embedded once)."""

    chunks: list[retrieval_pb2.ScoredChunk]
    query_vector: list[float]


async def search_chunks(
    deps: TaskDeps,
    tenant_id: str,
    collection: str,
    question: str,
    top_k: int,
    search_filter: struct_pb2.Struct | None = None,
    *,
    rerank: bool | None = None,
) -> Found:
    """The chunks retrieval finds for ``question`` (those with text), best first; reranked
    when ``rerank`` says so (None: as the collection's default says)."""
    search = retrieval_pb2.SearchRequest(
        tenant_id=tenant_id,
        collection=collection,
        query=question.strip(),
        top_k=top_k,
        return_query_vector=True,
    )
    if search_filter is not None:
        search.filter.CopyFrom(search_filter)
    if rerank is not None:
        search.rerank = rerank
    try:
        reply = await deps.retrieval.Search(search, timeout=deps.backend_timeout)
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error, "retrieval") from None
    chunks = [chunk for chunk in reply.chunks if chunk.text.strip()]
    return Found(chunks, list(reply.query_vector))


def citation(number: int, chunk: retrieval_pb2.ScoredChunk) -> llm_pb2.Citation:
    """Source ``number`` of a reply: the chunk it was made of."""
    cited = llm_pb2.Citation(
        source=number,
        document_id=chunk.document_id,
        chunk_id=chunk.chunk_id,
        text=chunk.text,
        score=chunk.score,
    )
    if chunk.HasField("metadata"):
        cited.metadata.CopyFrom(chunk.metadata)
    return cited


def citations(
    numbers: Iterable[int], chunks: list[retrieval_pb2.ScoredChunk]
) -> list[llm_pb2.Citation]:
    """The citations of sources ``numbers`` (1-based positions in ``chunks``)."""
    return [citation(number, chunks[number - 1]) for number in numbers]
