"""/v1/collections and search modes through the gateway, in front of the REAL retrieval service.

The retrieval service here is the real one (Milvus Lite, the real embedding server), not
the gateway's in-memory fake: collections and hybrid search are its behaviour to prove.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from aimesh_gateway.main import create_app
from aimesh_retrieval.config import Settings as RetrievalSettings
from aimesh_retrieval.jobs import JobStore
from aimesh_retrieval.store import MilvusStore
from tests.gateway.helpers import assert_problem, editor, settings_for, user
from tests.retrieval.conftest import serve


@pytest.fixture(scope="module")
async def real_client(
    embedding_addr: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    data: Path = tmp_path_factory.mktemp("gateway-retrieval")
    store = MilvusStore.open(RetrievalSettings(data_dir=data))
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{data / 'jobs.db'}")
    async for retrieval in serve(store, embedding_addr, jobs):
        gateway: FastAPI = create_app(
            settings_for(
                router_addr=embedding_addr,
                retrieval_addr=retrieval.address,
                embedding_addr=embedding_addr,
            )
        )
        async with gateway.router.lifespan_context(gateway):
            transport = httpx.ASGITransport(app=gateway, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
                yield http
    await jobs.close()
    await store.close()


async def test_create_list_search_delete(real_client: httpx.AsyncClient) -> None:
    name = f"gw-{uuid.uuid4().hex[:10]}"
    created = await real_client.post(
        "/v1/collections",
        json={"name": name, "chunking": {"chunk_size": 64, "chunk_overlap": 8, "markdown": True}},
        headers=editor(),
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == name
    assert body["chunking"] == {
        "chunk_size": 64,
        "chunk_overlap": 8,
        "markdown": True,
        "context": True,
    }
    assert (body["index_type"], body["full_text"], body["dimension"]) == ("FLAT", True, 384)

    again = await real_client.post("/v1/collections", json={"name": name}, headers=editor())
    assert assert_problem(again, 409)["detail"] == f"collection '{name}' already exists"

    listed = await real_client.get("/v1/collections", headers=user())
    assert listed.status_code == 200
    assert name in [c["name"] for c in listed.json()["collections"]]
    elsewhere = await real_client.get("/v1/collections", headers=user(tenant="other-tenant"))
    assert name not in [c["name"] for c in elsewhere.json()["collections"]]

    stored = await real_client.post(
        f"/v1/collections/{name}/documents",
        json=[
            {
                "id": "part",
                "text": "## Spare parts\n\nReplacement part zorblax-7731 fits old grinders.",
                "metadata": {"title": "Shop notes"},
            },
            {"id": "coffee", "text": "Espresso is brewed with hot water and coffee."},
        ],
        headers=editor(),
    )
    assert stored.status_code == 200, stored.text
    for mode in ("dense", "bm25", "hybrid"):
        found = await real_client.post(
            f"/v1/collections/{name}/search",
            json={"query": "zorblax-7731", "mode": mode, "top_k": 2},
            headers=user(),
        )
        assert found.status_code == 200, found.text
        best = found.json()["results"][0]
        assert best["document_id"] == "part", mode
        # Chunk context: the title and heading path come back beside the chunk's text.
        assert (best["title"], best["section"]) == ("Shop notes", "Spare parts"), mode
        assert best["text"].startswith("## Spare parts"), mode
    # The collection's default fusion: editors set and clear it, users may not.
    patched = await real_client.patch(
        f"/v1/collections/{name}",
        json={"fusion": {"fusion": "weighted", "dense_weight": 0.25}},
        headers=editor(),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["fusion"] == {"fusion": "weighted", "dense_weight": 0.25}
    listed_again = await real_client.get("/v1/collections", headers=user())
    [mine] = [c for c in listed_again.json()["collections"] if c["name"] == name]
    assert mine["fusion"] == {"fusion": "weighted", "dense_weight": 0.25}
    forbidden = await real_client.patch(
        f"/v1/collections/{name}", json={"fusion": None}, headers=user()
    )
    assert forbidden.status_code == 403
    bad = await real_client.patch(
        f"/v1/collections/{name}",
        json={"fusion": {"fusion": "rrf", "dense_weight": 0.5}},
        headers=editor(),
    )
    assert_problem(bad, 422)
    unknown = await real_client.patch(
        f"/v1/collections/{name}-missing", json={"fusion": None}, headers=editor()
    )
    assert_problem(unknown, 404)
    cleared = await real_client.patch(
        f"/v1/collections/{name}", json={"fusion": None}, headers=editor()
    )
    assert cleared.json()["fusion"] is None
    plain = await real_client.post(
        "/v1/collections",
        json={"name": f"{name}-plain", "chunking": {"context": False}},
        headers=editor(),
    )
    assert plain.status_code == 201, plain.text
    assert plain.json()["chunking"]["context"] is False
    await real_client.delete(f"/v1/collections/{name}-plain", headers=editor())
    weighted = await real_client.post(
        f"/v1/collections/{name}/search",
        json={"query": "brewing coffee", "mode": "hybrid", "fusion": "weighted", "dense_weight": 1},
        headers=user(),
    )
    assert weighted.json()["results"][0]["document_id"] == "coffee"

    # Users may not delete; other tenants do not see it; the editor deletes it.
    assert (await real_client.delete(f"/v1/collections/{name}", headers=user())).status_code == 403
    missing = await real_client.delete(
        f"/v1/collections/{name}", headers=editor(tenant="other-tenant")
    )
    assert assert_problem(missing, 404)["detail"] == f"collection '{name}' not found"
    deleted = await real_client.delete(f"/v1/collections/{name}", headers=editor())
    assert deleted.status_code == 204
    gone = await real_client.post(
        f"/v1/collections/{name}/search", json={"query": "x"}, headers=user()
    )
    assert_problem(gone, 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "bad name"}, "name"),
        ({"name": "ok", "chunking": {"chunk_size": 255}}, "chunk_size"),
        ({"name": "ok", "index": {"index_type": "IVF"}}, "index_type"),
        ({"name": "ok", "extra": 1}, "extra"),
    ],
)
async def test_bad_create_requests(
    real_client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await real_client.post("/v1/collections", json=body, headers=editor())
    assert field in response.text
    assert_problem(response, 422)
