"""Bad input that once answered 500 is a 4xx problem, and nothing is stored (issue 19 §1).

Documents, search, uploads and embeddings run in front of the REAL retrieval and embedding
services (``real_client``); chat in front of the in-memory router (``client``).
"""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from typing import Any

import httpx
import jwt
import pytest
from fastapi.routing import APIRoute

from aimesh_gateway.api.main import routers
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from tests.gateway.api.routes.test_collections import real_client  # noqa: F401 - shared fixture
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import (
    JWT_SECRET,
    assert_problem,
    bearer,
    editor,
    user,
    valid_claims,
)

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
CONTENT_TYPES = (
    b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
    b'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-'
    b'package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
    b'<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
    b'officedocument.wordprocessingml.document.main+xml"/></Types>'
)
RELS = (
    b'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
    b'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
    b'officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>'
    b"</Relationships>"
)
GOOD_DOCUMENT = (
    b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
    b'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>Hello</w:t></w:r></w:p></w:body>'
    b"</w:document>"
)


def nested(levels: int, leaf: Any = 1) -> dict[str, Any]:
    """``{"a": {"a": ... leaf}}``: ``levels`` objects deep."""
    value: Any = leaf
    for _ in range(levels):
        value = {"a": value}
    assert isinstance(value, dict)
    return value


def nested_and(levels: int) -> dict[str, Any]:
    """A filter with ``$and`` in ``$and`` ``levels`` times."""
    value: dict[str, Any] = {"topic": "x"}
    for _ in range(levels):
        value = {"$and": [value]}
    return value


def docx_package(document: bytes, content_types: bytes = CONTENT_TYPES) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as package:
        package.writestr("[Content_Types].xml", content_types)
        package.writestr("_rels/.rels", RELS)
        package.writestr("word/document.xml", document)
    return out.getvalue()


async def post_raw(
    client: httpx.AsyncClient, path: str, text: str, headers: dict[str, str]
) -> httpx.Response:
    """POST ``text`` as the JSON body, byte for byte (``"\\ud800"`` stays an escape)."""
    return await client.post(
        path, content=text.encode(), headers={**headers, "content-type": "application/json"}
    )


def test_every_route_checks_its_json_body() -> None:
    routes = [route for router in routers for route in router.routes if isinstance(route, APIRoute)]
    assert len(routes) > 20
    unchecked = [route.path for route in routes if not isinstance(route, CheckedJSONRoute)]
    assert unchecked == []


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("max_tokens", 10**12, 422),
        ("max_tokens", 2**63, 400),
        ("max_completion_tokens", 2**63 - 1, 422),
        ("max_tokens", True, 422),
        ("temperature", True, 422),
    ],
)
async def test_out_of_range_numbers_in_a_chat_request_are_4xx(
    client: httpx.AsyncClient, fake_mesh: FakeMesh, field: str, value: Any, status: int
) -> None:
    calls = len(fake_mesh.router.recorder.calls)
    response = await client.post(CHAT, json={"messages": HI, field: value}, headers=user())
    problem = assert_problem(response, status)
    assert field in problem["detail"] or "integer out of range" in problem["detail"]
    assert len(fake_mesh.router.recorder.calls) == calls, "the router was called"


@pytest.mark.parametrize(
    "text",
    [
        '{"messages": [{"role": "user", "content": "\\ud800"}]}',
        '{"messages": [{"role": "user", "content": "a\\udfffb"}]}',
        '{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud83d"]}',
        '{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        '{"messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}',
        '{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}',
    ],
)
async def test_invalid_strings_and_numbers_in_a_body_are_400(
    client: httpx.AsyncClient, text: str
) -> None:
    response = await post_raw(client, CHAT, text, user())
    problem = assert_problem(response, 400)
    assert problem["detail"].startswith("request body refused: body")
    assert problem["error"]["type"] == "invalid_request_error"  # OpenAI's error object too


async def test_a_valid_surrogate_pair_is_text(client: httpx.AsyncClient) -> None:
    text = '{"messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}]}'
    response = await post_raw(client, CHAT, text, user())
    assert response.status_code == 200, response.text


async def test_a_body_nested_too_deep_is_400(client: httpx.AsyncClient) -> None:
    for depth in (40, 100_000):  # the second is past Python's recursion limit
        text = '{"messages": ' + "[" * depth + "]" * depth + "}"
        response = await post_raw(client, CHAT, text, user())
        problem = assert_problem(response, 400)
        assert "nested deeper than 32 levels" in problem["detail"]


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"bogus": 1}, 400, "Unrecognized request argument supplied: bogus"),
        ({"tenant_id": "x", "zz": 1}, 400, "Unrecognized request argument supplied: tenant_id, zz"),
        ({"response_format": {"type": "json_object"}}, 400, "Unsupported request argument"),
        ({"functions": []}, 400, "Unsupported request argument supplied: functions"),
    ],
)
async def test_unknown_openai_arguments_are_400(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, names: str
) -> None:
    response = await client.post(CHAT, json={"messages": HI, **body}, headers=user())
    problem = assert_problem(response, status)
    assert problem["detail"] == names or problem["detail"].startswith(names)
    assert problem["error"]["message"] == problem["detail"]


async def test_openai_arguments_without_meaning_here_are_ignored(
    client: httpx.AsyncClient,
) -> None:
    body = {"messages": HI, "seed": 7, "top_p": 0.5, "logprobs": False, "user": "u", "store": False}
    response = await client.post(CHAT, json=body, headers=user())
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": str(int(time.time()) + 300)},
        {"exp": True},
        {"iat": "yesterday"},
        {"nbf": [1]},
        {"sub": 42},
        {"aud": 7},
        {"aud": ["aimesh", 7]},
        {"jti": {"id": 1}},
    ],
)
async def test_registered_jwt_claims_of_the_wrong_type_are_401(
    client: httpx.AsyncClient, claims: dict[str, Any]
) -> None:
    token = jwt.encode(valid_claims(**claims), JWT_SECRET, algorithm="HS256")
    response = await client.get("/v1/models", headers=bearer(token))
    assert_problem(response, 401)


async def test_registered_jwt_claims_of_the_right_types_pass(client: httpx.AsyncClient) -> None:
    now = time.time()
    claims = valid_claims(iat=now, nbf=int(now) - 5, exp=now + 300.5, aud=["x", "aimesh"], jti="1")
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    response = await client.get("/v1/models", headers=bearer(token))
    assert response.status_code == 200, response.text


# In front of the real retrieval and embedding services.


async def _stored(client: httpx.AsyncClient, collection: str) -> list[str]:
    listed = await client.get(f"/v1/collections/{collection}/documents", headers=user())
    if listed.status_code == 404:
        return []
    assert listed.status_code == 200, listed.text
    return [document["id"] for document in listed.json()["documents"]]


@pytest.mark.parametrize(
    ("metadata", "status", "detail"),
    [
        (nested(100), 400, "nested deeper than 32 levels"),
        (nested(20), 422, "nested deeper than 16 levels"),
        ({"big": 2**63}, 400, "integer out of range"),
        ({"big": 2**60}, 422, "integer out of range"),
        ({"bad": "\ud800"}, 400, "lone UTF-16 surrogate"),
    ],
)
async def test_bad_metadata_is_4xx_and_nothing_is_stored(
    real_client: httpx.AsyncClient,  # noqa: F811
    metadata: dict[str, Any],
    status: int,
    detail: str,
) -> None:
    collection = f"meta-{uuid.uuid4().hex[:8]}"
    documents = [
        {"id": "good", "text": "a good document"},
        {"id": "bad", "text": "a bad one", "metadata": metadata},
    ]
    text = json.dumps({"documents": documents})  # keeps "\ud800" as the escape
    response = await post_raw(
        real_client, f"/v1/collections/{collection}/documents", text, editor()
    )
    assert detail in assert_problem(response, status)["detail"]
    assert await _stored(real_client, collection) == []


async def test_metadata_at_the_depth_limit_is_stored(
    real_client: httpx.AsyncClient,  # noqa: F811
) -> None:
    collection = f"meta-{uuid.uuid4().hex[:8]}"
    deep = nested(15, leaf=2**53)
    response = await real_client.post(
        f"/v1/collections/{collection}/documents",
        json={"documents": [{"id": "deep", "text": "deep metadata", "metadata": deep}]},
        headers=editor(),
    )
    assert response.status_code == 200, response.text
    listed = await real_client.get(f"/v1/collections/{collection}/documents", headers=user())
    assert listed.json()["documents"][0]["metadata"] == deep


@pytest.mark.parametrize(
    ("search_filter", "status", "detail"),
    [
        (nested_and(20), 400, "nested deeper than 32 levels"),
        (nested_and(10), 422, "nested deeper than 16 levels"),
        ({"year": 2**70}, 400, "body.filter.year: integer out of range"),
        ({"year": {"$gt": -(2**64)}}, 400, "integer out of range"),
        ({"year": {"$in": [1, 2**55]}}, 422, "integer out of range"),
    ],
)
async def test_bad_filters_are_4xx(
    real_client: httpx.AsyncClient,  # noqa: F811
    search_filter: dict[str, Any],
    status: int,
    detail: str,
) -> None:
    collection = f"flt-{uuid.uuid4().hex[:8]}"
    stored = await real_client.post(
        f"/v1/collections/{collection}/documents",
        json=[{"id": "d", "text": "some text", "metadata": {"year": 2020}}],
        headers=editor(),
    )
    assert stored.status_code == 200, stored.text
    response = await real_client.post(
        f"/v1/collections/{collection}/search",
        json={"query": "text", "filter": search_filter},
        headers=user(),
    )
    assert detail in assert_problem(response, status)["detail"]
    # A boolean is not a top_k.
    response = await real_client.post(
        f"/v1/collections/{collection}/search",
        json={"query": "text", "top_k": True},
        headers=user(),
    )
    assert "top_k must be a number" in assert_problem(response, 422)["detail"]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("broken-xml.docx", docx_package(b"<w:document><broken"), "is not a readable .docx"),
        (
            "no-namespace.docx",
            docx_package(b"<w:document><w:body/></w:document>"),
            "is not a readable .docx",
        ),
        (
            "broken-types.docx",
            docx_package(GOOD_DOCUMENT, content_types=b"<Types><broken"),
            "is not a readable .docx",
        ),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32 levels"),
        ("deep40.json", b"[" * 40 + b"]" * 40, "nested deeper than 32 levels"),
        ("surrogate.json", b'{"text": "\\ud800"}', "lone UTF-16 surrogate"),
        ("huge.json", b'{"n": ' + b"9" * 5000 + b"}", "integer out of range"),
        (
            "docs.json",
            json.dumps([{"text": "t", "metadata": nested(20)}]).encode(),
            "item 0: metadata",
        ),
    ],
)
async def test_broken_uploads_are_422_and_nothing_is_stored(
    real_client: httpx.AsyncClient,  # noqa: F811
    name: str,
    content: bytes,
    reason: str,
) -> None:
    collection = f"up-{uuid.uuid4().hex[:8]}"
    files = [
        ("files", ("good.txt", b"A good text file.", "text/plain")),
        ("files", (name, content, DOCX if name.endswith(".docx") else "application/json")),
    ]
    response = await real_client.post(
        f"/v1/collections/{collection}/files", files=files, headers=editor()
    )
    problem = assert_problem(response, 422)
    assert problem["detail"].startswith(f"file '{name}'")
    assert reason in problem["detail"]
    assert await _stored(real_client, collection) == []


async def test_a_good_docx_package_is_read(real_client: httpx.AsyncClient) -> None:  # noqa: F811
    collection = f"up-{uuid.uuid4().hex[:8]}"
    files = [("files", ("good.docx", docx_package(GOOD_DOCUMENT), DOCX))]
    response = await real_client.post(
        f"/v1/collections/{collection}/files", files=files, headers=editor()
    )
    assert response.status_code == 202, response.text


async def test_upload_metadata_is_checked(real_client: httpx.AsyncClient) -> None:  # noqa: F811
    files = [("files", ("good.txt", b"A good text file.", "text/plain"))]
    for metadata in (json.dumps(nested(20)), '{"n": NaN}', '{"s": "\\udc00"}'):
        response = await real_client.post(
            "/v1/collections/upmeta/files",
            files=files,
            data={"metadata": metadata},
            headers=editor(),
        )
        assert_problem(response, 422)


@pytest.mark.parametrize(
    "text",
    [
        '{"model": "all-MiniLM-L6-v2", "input": "\\ud800"}',
        '{"model": "all-MiniLM-L6-v2", "input": ["ok", "\\udbff"]}',
    ],
)
async def test_embeddings_of_a_lone_surrogate_are_400(
    real_client: httpx.AsyncClient,  # noqa: F811
    text: str,
) -> None:
    response = await post_raw(real_client, "/v1/embeddings", text, user())
    assert "lone UTF-16 surrogate" in assert_problem(response, 400)["detail"]


async def test_embeddings_refuse_unknown_arguments_and_booleans(
    real_client: httpx.AsyncClient,  # noqa: F811
) -> None:
    base = {"model": "all-MiniLM-L6-v2", "input": "hello"}
    response = await real_client.post(
        "/v1/embeddings", json={**base, "dimension": 8}, headers=user()
    )
    assert assert_problem(response, 400)["detail"] == (
        "Unrecognized request argument supplied: dimension"
    )
    response = await real_client.post(
        "/v1/embeddings", json={**base, "input": [True, False]}, headers=user()
    )
    assert_problem(response, 422)
    response = await real_client.post(
        "/v1/embeddings", json={**base, "dimensions": 2**40}, headers=user()
    )
    assert_problem(response, 422)
    response = await real_client.post("/v1/embeddings", json={**base, "user": "u"}, headers=user())
    assert response.status_code == 200, response.text
