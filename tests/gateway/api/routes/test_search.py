"""POST /v1/collections/{collection}/search."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import assert_problem, editor, user

COLLECTION = "search-tests"


@pytest.fixture(scope="module", autouse=True)
async def _documents(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.post(
            f"/v1/collections/{COLLECTION}/documents",
            json=[
                {
                    "id": "paris",
                    "text": "Paris is the capital of France",
                    "metadata": {"lang": "en"},
                },
                {"id": "berlin", "text": "Berlin ist die Hauptstadt", "metadata": {"lang": "de"}},
                {"id": "rome", "text": "Rome is the capital of Italy", "metadata": {"lang": "en"}},
            ],
            headers=editor(),
        )
        assert response.status_code == 200, response.text


async def test_results_are_ranked_chunks(client: httpx.AsyncClient, fake_mesh: FakeMesh) -> None:
    response = await client.post(
        f"/v1/collections/{COLLECTION}/search",
        json={"query": "capital of France", "top_k": 2},
        headers=user(),
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2
    assert results[0] == {
        "document_id": "paris",
        "chunk_id": "paris#0",
        "chunk_index": 0,
        "text": "Paris is the capital of France",
        "score": 1.0,
        "metadata": {"lang": "en"},
        "title": "",
        "section": "",
    }
    assert results[1]["document_id"] == "rome"
    assert results[1]["score"] == pytest.approx(2 / 3, abs=1e-6)
    sent = fake_mesh.retrieval.recorder.last("Search")
    assert (sent.tenant_id, sent.request.top_k, sent.request.HasField("filter")) == (
        "acme",
        2,
        False,
    )


async def test_top_k_defaults_to_5(client: httpx.AsyncClient, fake_mesh: FakeMesh) -> None:
    await client.post(f"/v1/collections/{COLLECTION}/search", json={"query": "q"}, headers=user())
    assert fake_mesh.retrieval.recorder.last("Search").request.top_k == 5


async def test_filter_is_passed_through(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/collections/{COLLECTION}/search",
        json={"query": "capital", "filter": {"lang": "de"}},
        headers=user(),
    )
    assert [r["document_id"] for r in response.json()["results"]] == ["berlin"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"query": ""},
        {"query": "q", "top_k": 0},
        {"query": "q", "top_k": 10_000},
        {"query": "q", "filter": "lang=en"},
        {"query": "q", "topk": 3},
    ],
)
async def test_invalid_search_is_422(client: httpx.AsyncClient, body: object) -> None:
    response = await client.post(f"/v1/collections/{COLLECTION}/search", json=body, headers=user())
    assert_problem(response, 422)


async def test_rerank_is_passed_through_and_null_leaves_the_collection_default(
    client: httpx.AsyncClient, fake_mesh: FakeMesh
) -> None:
    url = f"/v1/collections/{COLLECTION}/search"
    response = await client.post(url, json={"query": "capital"}, headers=user())
    assert response.status_code == 200, response.text
    assert not fake_mesh.retrieval.recorder.last("Search").request.HasField("rerank")
    response = await client.post(url, json={"query": "capital", "rerank": False}, headers=user())
    assert response.status_code == 200, response.text
    sent = fake_mesh.retrieval.recorder.last("Search").request
    assert sent.HasField("rerank")
    assert sent.rerank is False


async def test_rerank_without_a_reranker_is_a_409_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/collections/{COLLECTION}/search",
        json={"query": "capital", "rerank": True},
        headers={**user(), "Cache-Control": "no-cache"},
    )
    body = assert_problem(response, 409)
    assert "no reranker configured" in body["detail"]


async def test_rerank_must_be_a_boolean(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/collections/{COLLECTION}/search",
        json={"query": "capital", "rerank": "sometimes"},
        headers=user(),
    )
    assert_problem(response, 422)
