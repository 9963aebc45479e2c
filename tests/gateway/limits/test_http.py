"""Per-request limits: the body limits (global and per route) and the response timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import Response
from fastapi.responses import StreamingResponse

from aimesh_gateway.core.config import Settings
from aimesh_gateway.main import create_app
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import ADMIN, assert_problem, editor, running, user

TEN_MB = 10 * 1024 * 1024


def _settings(fake_mesh: FakeMesh, **overrides: Any) -> Settings:
    return fake_mesh.settings(
        **overrides,
    )


async def test_routes_have_their_own_body_limits(fake_mesh: FakeMesh) -> None:
    app = create_app(_settings(fake_mesh, max_body_bytes=2048))
    async with running(app) as client:
        # The admin route's own limit (16 KiB) is above the global one (2 KiB) ...
        body = {"roles": ["user"], "name": "n" * 150, "tenant_id": "big"}
        padded = {**body, "pad": "x" * 3000}
        response = await client.post("/v1/admin/keys", json=padded, headers=ADMIN)
        assert_problem(response, 422)  # read in full, then refused for the unknown field
        # ... and the token route's (16 KiB) below the default (5 MiB).
        form = {"grant_type": "password", "username": "u", "password": "p" * 20_000}
        assert_problem(await client.post("/v1/auth/token", data=form), 413)
        assert_problem(
            await client.post("/v1/summarize", json={"text": "a" * 3000}, headers=ADMIN), 413
        )


async def test_slow_request_gets_504_without_a_500(fake_mesh: FakeMesh) -> None:
    app = create_app(_settings(fake_mesh, http_timeout_seconds=0.2))

    async def slow() -> Response:
        await asyncio.sleep(5)
        return Response("late")

    app.add_api_route("/slow", slow)
    app.add_api_route("/v1/completions", slow, methods=["POST"])  # an OpenAI path
    async with running(app) as client:
        response = await client.get("/slow")
        body = assert_problem(response, 504)
        assert "0.2 s" in body["detail"]
        assert "error" not in body
        openai_shaped = assert_problem(await client.post("/v1/completions"), 504)
        assert openai_shaped["error"]["type"] == "api_error"
        assert "0.2 s" in openai_shaped["error"]["message"]
        assert (await client.get("/v1/models", headers=user())).status_code == 200


async def test_a_started_stream_outlives_the_response_timeout(fake_mesh: FakeMesh) -> None:
    app = create_app(_settings(fake_mesh, http_timeout_seconds=0.2))

    async def ticks() -> AsyncIterator[str]:
        for tick in range(4):
            yield f"tick {tick}\n"
            await asyncio.sleep(0.1)  # 0.4 s in all: twice the timeout

    async def stream() -> StreamingResponse:
        return StreamingResponse(ticks(), media_type="text/plain")

    async def own_timeout() -> Response:
        raise TimeoutError  # a route's own TimeoutError is not the middleware's 504

    app.add_api_route("/stream", stream)
    app.add_api_route("/own-timeout", own_timeout)
    async with running(app) as client:
        response = await client.get("/stream")
        assert response.status_code == 200
        assert response.text == "tick 0\ntick 1\ntick 2\ntick 3\n"
        assert_problem(await client.get("/own-timeout"), 500)


async def test_body_over_the_limit_with_content_length_is_413(client: httpx.AsyncClient) -> None:
    huge = {"documents": [{"id": "big", "text": "x" * TEN_MB}]}
    response = await client.post("/v1/collections/docs/documents", json=huge, headers=editor())
    problem = assert_problem(response, 413)
    assert str(5 * 1024 * 1024) in problem["detail"]


async def test_body_over_the_limit_without_content_length_is_413(
    client: httpx.AsyncClient, fake_mesh: FakeMesh
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"documents": [{"id": "big", "text": "'
        for _ in range(TEN_MB // 65536):
            sent += 65536
            yield b"x" * 65536
        yield b'"}]}'

    before = len(fake_mesh.retrieval.recorder.calls)
    response = await client.post(
        "/v1/collections/docs/documents",
        content=chunks(),
        headers={**editor(), "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)
    assert len(fake_mesh.retrieval.recorder.calls) == before  # nothing reached the backend
    assert sent < TEN_MB  # reading stopped once the limit was passed


async def test_body_under_a_small_limit_passes_and_over_fails(fake_mesh: FakeMesh) -> None:
    settings = fake_mesh.settings(
        max_body_bytes=2048,
    )
    async with running(create_app(settings)) as client:
        small = {"text": "a" * 1000}
        assert (await client.post("/v1/summarize", json=small, headers=ADMIN)).status_code == 200
        assert_problem(
            await client.post("/v1/summarize", json={"text": "a" * 3000}, headers=ADMIN), 413
        )
