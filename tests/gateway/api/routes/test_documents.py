"""POST/GET/DELETE /v1/collections/{collection}/documents."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import ADMIN, assert_problem, editor, user


@pytest.fixture
def collection() -> str:
    return f"docs-{uuid.uuid4().hex[:8]}"


DOCS = [
    {"id": "a", "text": "one two three four five six seven eight nine ten", "metadata": {"n": 1}},
    {"id": "b", "text": "short text", "metadata": {"lang": "en", "tags": ["x", "y"]}},
]


async def test_upsert_list_delete_round_trip(
    client: httpx.AsyncClient, fake_mesh: FakeMesh, collection: str
) -> None:
    path = f"/v1/collections/{collection}/documents"
    stored = await client.post(path, json={"documents": DOCS}, headers=editor())
    assert stored.status_code == 200, stored.text
    assert stored.json() == {
        "results": [
            {"id": "a", "chunks": 2, "replaced": False},
            {"id": "b", "chunks": 1, "replaced": False},
        ]
    }
    sent = fake_mesh.retrieval.recorder.last("UpsertDocuments").request
    assert sent.collection == collection
    assert [doc.id for doc in sent.documents] == ["a", "b"]

    again = await client.post(path, json={"documents": [DOCS[1]]}, headers=editor())
    assert again.json()["results"] == [{"id": "b", "chunks": 1, "replaced": True}]

    listed = await client.get(path, headers=user())
    assert listed.status_code == 200
    # Metadata comes back as it was sent (ints stay ints despite protobuf's doubles).
    assert listed.json() == {
        "documents": [
            {"id": "a", "chunks": 2, "metadata": {"n": 1}},
            {"id": "b", "chunks": 1, "metadata": {"lang": "en", "tags": ["x", "y"]}},
        ]
    }
    limited = await client.get(path, params={"limit": 1}, headers=user())
    assert [doc["id"] for doc in limited.json()["documents"]] == ["a"]
    assert fake_mesh.retrieval.recorder.last("ListDocuments").request.limit == 1

    deleted = await client.delete(f"{path}/a", headers=editor())
    assert deleted.status_code == 200
    assert deleted.json() == {"deleted_chunks": 2}
    assert_problem(await client.delete(f"{path}/a", headers=editor()), 404)
    remaining = await client.get(path, headers=user())
    assert [doc["id"] for doc in remaining.json()["documents"]] == ["b"]


async def test_a_bare_list_is_accepted(client: httpx.AsyncClient, collection: str) -> None:
    response = await client.post(
        f"/v1/collections/{collection}/documents", json=DOCS, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["results"]] == ["a", "b"]


async def test_document_ids_with_slashes_can_be_deleted(
    client: httpx.AsyncClient, collection: str
) -> None:
    path = f"/v1/collections/{collection}/documents"
    doc = {"id": "guides/intro.md", "text": "hello there"}
    assert (await client.post(path, json=[doc], headers=ADMIN)).status_code == 200
    deleted = await client.delete(f"{path}/guides/intro.md", headers=ADMIN)
    assert deleted.json() == {"deleted_chunks": 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"documents": []}, "documents"),
        ([], "documents"),
        ({"documents": [{"id": "", "text": "t"}]}, "id"),
        ({"documents": [{"id": "x" * 257, "text": "t"}]}, "id"),
        ({"documents": [{"id": "a", "text": ""}]}, "text"),
        ({"documents": [{"id": "a"}]}, "text"),
        ({"documents": [{"id": "a", "text": "t", "metadata": [1]}]}, "metadata"),
        ({"documents": [{"id": "a", "text": "t", "tenant_id": "other"}]}, "tenant_id"),
        ({"docs": [{"id": "a", "text": "t"}]}, "documents"),
    ],
)
async def test_invalid_documents_are_422(
    client: httpx.AsyncClient, collection: str, body: object, field: str
) -> None:
    response = await client.post(
        f"/v1/collections/{collection}/documents", json=body, headers=editor()
    )
    problem = assert_problem(response, 422)
    assert field in problem["detail"]


async def test_backend_rejection_is_400(client: httpx.AsyncClient, collection: str) -> None:
    response = await client.post(
        f"/v1/collections/{collection}/documents",
        json=[{"id": "blank", "text": "   "}],
        headers=editor(),
    )
    problem = assert_problem(response, 400)
    assert "documents[0].text" in problem["detail"]


async def test_list_limit_is_bounded(client: httpx.AsyncClient) -> None:
    for limit in (0, 1001):
        response = await client.get(
            "/v1/collections/docs/documents", params={"limit": limit}, headers=user()
        )
        assert_problem(response, 422)


async def test_unknown_collection_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/collections/nope-1/documents", headers=user()), 404)
    assert_problem(await client.delete("/v1/collections/nope-1/documents/x", headers=editor()), 404)
