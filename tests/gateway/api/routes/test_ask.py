"""POST /v1/ask."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import assert_problem, editor, user

COLLECTION = "ask-tests"


async def _store(client: httpx.AsyncClient, tenant: str = "acme") -> None:
    response = await client.post(
        f"/v1/collections/{COLLECTION}/documents",
        json=[
            {
                "id": "eiffel",
                "text": "The Eiffel Tower was completed in 1889",
                "metadata": {"y": 1889},
            },
            {"id": "moon", "text": "Apollo 11 landed on the Moon", "metadata": {"y": 1969}},
        ],
        headers=editor(tenant),
    )
    assert response.status_code == 200, response.text


async def test_answer_with_citations(client: httpx.AsyncClient, fake_mesh: FakeMesh) -> None:
    await _store(client)
    response = await client.post(
        "/v1/ask",
        json={"question": "When was the Eiffel Tower completed?", "collection": COLLECTION},
        headers=user(),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "default"
    assert body["answer"].startswith("The Eiffel Tower was completed in 1889 [1]")
    first = body["citations"][0]
    assert first["source"] == 1
    assert (first["document_id"], first["chunk_id"]) == ("eiffel", "eiffel#0")
    assert first["metadata"] == {"y": 1889}
    assert 0 < first["score"] <= 1
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    sent = fake_mesh.router.recorder.last("Answer")
    assert (sent.tenant_id, sent.request.collection, sent.request.top_k) == ("acme", COLLECTION, 5)
    assert sent.request.model == ""  # the router's default alias for answers
    # The router's retrieval call ran for the same tenant.
    assert fake_mesh.retrieval.recorder.last("Search").tenant_id == "acme"


async def test_top_k_model_and_filter_are_passed(
    client: httpx.AsyncClient, fake_mesh: FakeMesh
) -> None:
    await _store(client)
    response = await client.post(
        "/v1/ask",
        json={
            "question": "What landed on the Moon?",
            "collection": COLLECTION,
            "top_k": 1,
            "model": "fast",
            "filter": {"y": 1969},
        },
        headers=user(),
    )
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "fast"
    assert [c["document_id"] for c in response.json()["citations"]] == ["moon"]
    sent = fake_mesh.router.recorder.last("Answer").request
    assert (sent.top_k, sent.model) == (1, "fast")
    assert dict(sent.filter) == {"y": 1969.0}


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    await _store(client)
    response = await client.post(
        "/v1/ask",
        json={"question": "q", "collection": COLLECTION, "model": "gpt-9"},
        headers=user(),
    )
    assert "gpt-9" in assert_problem(response, 404)["detail"]


async def test_other_tenants_collection_is_404(client: httpx.AsyncClient) -> None:
    await _store(client, tenant="owner")
    response = await client.post(
        "/v1/ask", json={"question": "Eiffel?", "collection": COLLECTION}, headers=user("intruder")
    )
    assert_problem(response, 404)


@pytest.mark.parametrize(
    "body",
    [
        {"collection": COLLECTION},
        {"question": "", "collection": COLLECTION},
        {"question": "q"},
        {"question": "q", "collection": "bad name"},
        {"question": "q", "collection": COLLECTION, "top_k": 0},
        {"question": "q", "collection": COLLECTION, "top_k": 51},
        {"question": "q", "collection": COLLECTION, "model": ""},
    ],
)
async def test_invalid_ask_is_422(client: httpx.AsyncClient, body: object) -> None:
    assert_problem(await client.post("/v1/ask", json=body, headers=user()), 422)


async def test_rerank_is_passed_to_the_router(
    client: httpx.AsyncClient, fake_mesh: FakeMesh
) -> None:
    await _store(client)
    question = {"question": "When was the Eiffel Tower completed?", "collection": COLLECTION}
    response = await client.post("/v1/ask", json=question, headers=user())
    assert response.status_code == 200, response.text
    assert not fake_mesh.router.recorder.last("Answer").request.HasField("rerank")
    response = await client.post("/v1/ask", json={**question, "rerank": False}, headers=user())
    assert response.status_code == 200, response.text
    sent = fake_mesh.router.recorder.last("Answer").request
    assert sent.HasField("rerank")
    assert sent.rerank is False
    # The fake retrieval has no reranker, as a real one without AIMESH_RERANKER.
    response = await client.post("/v1/ask", json={**question, "rerank": True}, headers=user())
    assert "no reranker configured" in assert_problem(response, 409)["detail"]
