"""POST /v1/files limits (the OpenAI SDK flow is in test_vector_stores.py): the tenant's
byte limit, empty files, a missing purpose, all as problem+json."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from aimesh_gateway.main import create_app
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import assert_problem, editor


@pytest.fixture(scope="module")
async def small(fake_mesh: FakeMesh) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway whose tenants may keep 20 bytes of files."""
    app = create_app(fake_mesh.settings(files_max_tenant_bytes=20))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http


async def _upload(http: httpx.AsyncClient, tenant: str, name: str, data: bytes) -> httpx.Response:
    return await http.post(
        "/v1/files",
        files={"file": (name, data, "text/plain")},
        data={"purpose": "assistants"},
        headers=editor(tenant),
    )


async def test_a_tenants_files_stay_within_its_byte_limit(small: httpx.AsyncClient) -> None:
    first = await _upload(small, "files-a", "a.txt", b"x" * 15)
    assert first.status_code == 200, first.text
    assert first.json()["bytes"] == 15
    over = await _upload(small, "files-a", "b.txt", b"y" * 10)
    assert_problem(over, 413)
    assert "b.txt" in over.json()["detail"]
    assert "at most 20" in over.json()["detail"]
    assert over.json()["error"]["type"] == "invalid_request_error"
    # Another tenant has its own 20 bytes; deleting frees the space.
    assert (await _upload(small, "files-b", "b.txt", b"y" * 10)).status_code == 200
    deleted = await small.delete(f"/v1/files/{first.json()['id']}", headers=editor("files-a"))
    assert deleted.json() == {"id": first.json()["id"], "object": "file", "deleted": True}
    assert (await _upload(small, "files-a", "b.txt", b"y" * 10)).status_code == 200


async def test_empty_files_and_missing_fields_are_refused(small: httpx.AsyncClient) -> None:
    empty = await _upload(small, "files-c", "empty.txt", b"")
    assert_problem(empty, 422)
    assert "empty.txt" in empty.json()["detail"]
    no_purpose = await small.post(
        "/v1/files", files={"file": ("a.txt", b"text", "text/plain")}, headers=editor("files-c")
    )
    assert_problem(no_purpose, 422)
    assert "purpose" in no_purpose.json()["detail"]
    no_file = await small.post(
        "/v1/files", data={"purpose": "assistants"}, headers=editor("files-c")
    )
    assert_problem(no_file, 422)
    assert "file" in no_file.json()["detail"]
    stray = await small.post(
        "/v1/files",
        files={"file": ("a.txt", b"text", "text/plain")},
        data={"purpose": "assistants", "colour": "blue"},
        headers=editor("files-c"),
    )
    assert_problem(stray, 400)
    assert "colour" in stray.json()["detail"]
    listed = await small.get("/v1/files", params={"after": "file-nope"}, headers=editor("files-c"))
    assert_problem(listed, 400)
    assert "after" in listed.json()["detail"]
