"""A real local HTTP server speaking the rerank APIs of TEI and Cohere/Jina/vLLM, for tests,
and a retrieval server with a configured reranker.

It scores a text by word overlap with the query (the share of the query's distinct words
that the text contains), serves both dialects (``POST /rerank`` and ``POST /v1/rerank``),
checks a bearer key when it has one, and records what it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aimesh.retrieval.v1 import retrieval_pb2_grpc
from aimesh_common.embedding_client import EmbeddingClient
from aimesh_retrieval.config import Settings
from aimesh_retrieval.rerank import build_reranker
from aimesh_retrieval.server import create_server
from aimesh_retrieval.store import MilvusStore
from tests.retrieval.conftest import Retrieval

_WORD = re.compile(r"[a-z0-9]+")


def overlap(query: str, text: str) -> float:
    """The share of the query's distinct words that occur in ``text``."""
    wanted = set(_WORD.findall(query.lower()))
    found = set(_WORD.findall(text.lower()))
    return len(wanted & found) / len(wanted) if wanted else 0.0


@dataclass
class RerankServer:
    """What the server was sent; ``api_key`` when it demands one; ``short`` makes it leave
    out the last result (a broken server)."""

    api_key: str | None = None
    short: bool = False
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def app(self) -> Starlette:
        async def tei(request: Request) -> JSONResponse:
            body = await request.json()
            refused = self._record("/rerank", request, body)
            if refused is not None:
                return refused
            scores = [overlap(body["query"], text) for text in body["texts"]]
            order = sorted(range(len(scores)), key=lambda i: -scores[i])
            order = order[:-1] if self.short else order
            return JSONResponse([{"index": i, "score": scores[i]} for i in order])

        async def cohere(request: Request) -> JSONResponse:
            body = await request.json()
            refused = self._record("/v1/rerank", request, body)
            if refused is not None:
                return refused
            scores = [overlap(body["query"], text) for text in body["documents"]]
            order = sorted(range(len(scores)), key=lambda i: -scores[i])
            order = order[: body.get("top_n") or len(order)]
            order = order[:-1] if self.short else order
            results = [{"index": i, "relevance_score": scores[i]} for i in order]
            return JSONResponse({"model": body.get("model", ""), "results": results})

        return Starlette(
            routes=[
                Route("/rerank", tei, methods=["POST"]),
                Route("/v1/rerank", cohere, methods=["POST"]),
            ]
        )

    def _record(self, path: str, request: Request, body: dict[str, Any]) -> JSONResponse | None:
        self.requests.append((path, body, dict(request.headers)))
        if self.api_key is not None and (
            request.headers.get("authorization") != f"Bearer {self.api_key}"
        ):
            return JSONResponse({"error": "invalid api key"}, status_code=401)
        return None


@contextlib.asynccontextmanager
async def serve_rerank(api_key: str | None = None) -> AsyncIterator[RerankServer]:
    """A RerankServer on 127.0.0.1, a port the system picks; stopped on exit."""
    rerank = RerankServer(api_key=api_key)
    server = uvicorn.Server(
        uvicorn.Config(rerank.app(), host="127.0.0.1", port=0, log_config=None, access_log=False)
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    rerank.url = f"http://127.0.0.1:{port}"
    try:
        yield rerank
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def serve_retrieval(
    store: MilvusStore, embedding_addr: str, **rerank_settings: Any
) -> AsyncIterator[Retrieval]:
    """A retrieval server on ``store`` with the reranker ``rerank_settings`` configure."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        embedding_service_addr=embedding_addr,
        embed_timeout_seconds=30,
        **rerank_settings,
    )
    embedder = EmbeddingClient.connect(embedding_addr, timeout=30)
    reranker = build_reranker(settings, embedder)
    server = create_server(settings, store, embedder, reranker=reranker)
    await server.start()
    address = f"127.0.0.1:{server.port}"
    channel = grpc.aio.insecure_channel(address)
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    yield Retrieval(stub=stub, store=store, settings=settings, channel=channel, address=address)
    await channel.close()
    await server.stop(0)
    if reranker is not None:
        await reranker.close()
    await embedder.close()
