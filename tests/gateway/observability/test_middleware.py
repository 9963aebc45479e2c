"""Request ids, the access log, the metrics and the security headers."""

from __future__ import annotations

import logging

import httpx
import pytest

from aimesh_gateway.observability.middleware import (
    RequestIdLogFilter,
    choose_request_id,
    request_id_var,
)
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import ADMIN, ADMIN_KEY, assert_problem, user


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


async def test_security_headers_on_every_response(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/healthz"),
        await client.get("/v1/models"),
        await client.get("/v1/models", headers=user()),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
    docs = await client.get("/docs")
    assert "content-security-policy" not in docs.headers
