"""Reranked search through the gateway, in front of the REAL retrieval service (Milvus Lite,
the real embedding server) configured with a real local rerank HTTP server, and in front
of one without a reranker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from aimesh_gateway.main import create_app
from aimesh_retrieval.config import Settings as RetrievalSettings
from aimesh_retrieval.store import MilvusStore
from tests.gateway.helpers import assert_problem, editor, settings_for, user
from tests.retrieval.rerank_server import overlap, serve_rerank, serve_retrieval

QUERY = "quiet harbour lighthouse keeper"
DOCS = [
    {"id": "keeper", "text": "The lighthouse keeper lived by the quiet harbour."},
    {"id": "boats", "text": "Fishing boats come back to the harbour at dusk."},
    {"id": "cake", "text": "Bake the cake for forty minutes at a moderate heat."},
]


async def _gateway(retrieval_addr: str, embedding_addr: str) -> AsyncIterator[httpx.AsyncClient]:
    gateway: FastAPI = create_app(
        settings_for(
            router_addr=embedding_addr,
            retrieval_addr=retrieval_addr,
            embedding_addr=embedding_addr,
        )
    )
    async with gateway.router.lifespan_context(gateway):
        transport = httpx.ASGITransport(app=gateway, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http


@pytest.fixture(scope="module")
async def store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MilvusStore]:
    data: Path = tmp_path_factory.mktemp("gateway-rerank")
    opened = MilvusStore.open(RetrievalSettings(data_dir=data))
    yield opened
    await opened.close()


@pytest.fixture(scope="module")
async def reranking_client(
    store: MilvusStore, embedding_addr: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_rerank() as rerank:
        async for retrieval in serve_retrieval(
            store, embedding_addr, reranker="http", rerank_url=rerank.url, rerank_protocol="cohere"
        ):
            async for client in _gateway(retrieval.address, embedding_addr):
                yield client


@pytest.fixture(scope="module")
async def plain_client(store: MilvusStore, embedding_addr: str) -> AsyncIterator[httpx.AsyncClient]:
    async for retrieval in serve_retrieval(store, embedding_addr):
        async for client in _gateway(retrieval.address, embedding_addr):
            yield client


async def _collection(client: httpx.AsyncClient, *, rerank: bool) -> str:
    name = f"rr-{uuid.uuid4().hex[:10]}"
    created = await client.post(
        "/v1/collections", json={"name": name, "rerank": rerank}, headers=editor()
    )
    assert created.status_code == 201, created.text
    assert created.json()["rerank"] is rerank
    stored = await client.post(f"/v1/collections/{name}/documents", json=DOCS, headers=editor())
    assert stored.status_code == 200, stored.text
    return name


async def test_a_collection_that_reranks_by_default(reranking_client: httpx.AsyncClient) -> None:
    name = await _collection(reranking_client, rerank=True)
    listed = await reranking_client.get("/v1/collections", headers=user())
    assert {c["name"]: c["rerank"] for c in listed.json()["collections"]}[name] is True
    url = f"/v1/collections/{name}/search"
    reranked = await reranking_client.post(url, json={"query": QUERY, "top_k": 3}, headers=user())
    assert reranked.status_code == 200, reranked.text
    results = reranked.json()["results"]
    assert [r["document_id"] for r in results] == ["keeper", "boats", "cake"]
    texts = {doc["id"]: doc["text"] for doc in DOCS}
    assert [r["score"] for r in results] == pytest.approx(
        [overlap(QUERY, texts[r["document_id"]]) for r in results]
    )
    plain = await reranking_client.post(
        url, json={"query": QUERY, "top_k": 3, "rerank": False}, headers=user()
    )
    assert plain.status_code == 200, plain.text
    assert plain.json()["results"][0]["score"] < 0.99


async def test_rerank_per_search(reranking_client: httpx.AsyncClient) -> None:
    name = await _collection(reranking_client, rerank=False)
    url = f"/v1/collections/{name}/search"
    response = await reranking_client.post(
        url, json={"query": QUERY, "top_k": 1, "rerank": True}, headers=user()
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["score"] == pytest.approx(1.0)
    both = await reranking_client.post(
        url, json={"query": QUERY, "rerank": True, "mmr": True}, headers=user()
    )
    assert "mmr" in assert_problem(both, 400)["detail"]


async def test_without_a_reranker_rerank_is_a_409_problem(plain_client: httpx.AsyncClient) -> None:
    refused = await plain_client.post(
        "/v1/collections", json={"name": "rr-never", "rerank": True}, headers=editor()
    )
    assert "no reranker configured" in assert_problem(refused, 409)["detail"]
    name = await _collection(plain_client, rerank=False)
    response = await plain_client.post(
        f"/v1/collections/{name}/search", json={"query": QUERY, "rerank": True}, headers=user()
    )
    body = assert_problem(response, 409)
    assert "no reranker configured" in body["detail"]
