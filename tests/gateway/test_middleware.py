"""Request ids, the body limit, the access log and the metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from aimesh_gateway.core.middleware import RequestIdLogFilter, choose_request_id, request_id_var
from aimesh_gateway.main import create_app
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import ADMIN, ADMIN_KEY, assert_problem, editor, running

TEN_MB = 10 * 1024 * 1024


async def test_request_id_is_generated_when_absent(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2
    assert all(len(value) == 32 for value in ids)


async def test_sane_request_id_is_propagated_to_the_backend(
    client: httpx.AsyncClient, fake_mesh: FakeMesh
) -> None:
    response = await client.get(
        "/v1/collections/any/documents", headers={**ADMIN, "X-Request-ID": "trace-42.a:b"}
    )
    assert response.headers["x-request-id"] == "trace-42.a:b"
    assert fake_mesh.retrieval.recorder.last("ListDocuments").request_id == "trace-42.a:b"


@pytest.mark.parametrize("incoming", ["", "has space", "x" * 129, "new\\nline", "-leading", "ü"])
def test_insane_request_ids_are_replaced(incoming: str) -> None:
    chosen = choose_request_id(incoming)
    assert chosen != incoming
    assert len(chosen) == 32


async def test_error_responses_carry_the_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models", headers={"X-Request-ID": "err-7"})
    body = assert_problem(response, 401)
    assert response.headers["x-request-id"] == body["request_id"] == "err-7"


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


async def test_access_log_has_route_status_tenant_and_no_secrets(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="aimesh.gateway.access"):
        await client.post(
            "/v1/collections/logged/search",
            json={"query": "a very secret query text"},
            headers={**ADMIN, "X-Request-ID": "log-1"},
        )
    records = [r for r in caplog.records if r.name == "aimesh.gateway.access"]
    assert len(records) == 1
    record = records[0]
    assert record.__dict__["route"] == "/v1/collections/{collection}/search"
    assert record.__dict__["method"] == "POST"
    assert record.__dict__["status"] == 404
    assert record.__dict__["tenant"] == "default"
    assert record.__dict__["request_id"] == "log-1"
    assert record.__dict__["duration_ms"] >= 0
    text = str(record.__dict__)
    assert ADMIN_KEY not in text
    assert "very secret query" not in text


async def test_metrics_are_labelled_by_route_template(client: httpx.AsyncClient) -> None:
    for name in ("one", "two", "three"):
        await client.post(f"/v1/collections/{name}/search", json={"query": "q"}, headers=ADMIN)
    await client.get("/definitely/not/a/route")
    metrics = (await client.get("/metrics")).text
    assert (
        'aimesh_http_requests_total{method="POST",route="/v1/collections/{collection}/search",'
        'status="404"}'
    ) in metrics
    assert 'route="<unmatched>",status="404"' in metrics
    assert "/v1/collections/one/search" not in metrics
    assert "/definitely/not" not in metrics
    assert "aimesh_http_request_duration_seconds_bucket" in metrics


def test_log_filter_adds_the_current_request_id() -> None:
    record = logging.makeLogRecord({"msg": "hello"})
    token = request_id_var.set("rid-9")
    try:
        RequestIdLogFilter().filter(record)
    finally:
        request_id_var.reset(token)
    assert record.__dict__["request_id"] == "rid-9"
    outside = logging.makeLogRecord({"msg": "hello"})
    RequestIdLogFilter().filter(outside)
    assert "request_id" not in outside.__dict__
