"""Problem+json for every kind of failure: HTTP, validation, backend status codes, bugs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI

from aimesh_common.errors import (
    AimeshError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from aimesh_gateway.core.errors import grpc_status_to_http
from aimesh_gateway.main import create_app
from aimesh_gateway.state import state_of
from tests.conftest import free_port
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import ADMIN, assert_problem, running, settings_for, user


def _abort(code: grpc.StatusCode) -> Any:
    async def abort(context: Any) -> None:
        await context.abort(code, "backend says no (internal host 10.1.2.3)")

    return abort


@pytest.mark.parametrize(
    ("error", "status", "detail"),
    [
        (InvalidArgument("top_k must be 1-50"), 400, "top_k must be 1-50"),
        (NotFound("collection 'x' does not exist"), 404, "collection 'x' does not exist"),
        (ResourceExhausted("too many requests"), 429, "too many requests"),
        (FailedPrecondition("dimension mismatch"), 409, "dimension mismatch"),
        (Unavailable("upstream at 10.0.0.7:443 refused"), 503, "unavailable"),
        (DeadlineExceeded("provider took 61 s"), 504, "did not answer in time"),
        (RuntimeError("secret internal state"), 502, "backend service failed"),
    ],
)
async def test_backend_status_codes_map_to_http(
    failing_client: httpx.AsyncClient,
    fake_mesh: FakeMesh,
    error: BaseException,
    status: int,
    detail: str,
) -> None:
    fake_mesh.failing.error = error
    for method, path, body in (
        ("POST", "/v1/summarize", {"text": "some text"}),
        ("POST", "/v1/ask", {"question": "q", "collection": "docs"}),
        ("GET", "/v1/models", None),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ):
        response = await failing_client.request(method, path, json=body, headers=user())
        problem = assert_problem(response, status)
        assert detail in problem["detail"], (path, problem)
        if not isinstance(error, AimeshError) or status >= 500:
            # Messages that may describe the inside of the mesh are not passed on.
            assert "10.0.0.7" not in response.text
            assert "secret internal state" not in response.text
        if status in (429, 503):
            assert response.headers["retry-after"] == "1"


async def test_logs_keep_a_backend_faults_details_but_not_the_callers_words(
    failing_client: httpx.AsyncClient, fake_mesh: FakeMesh, caplog: pytest.LogCaptureFixture
) -> None:
    # A caller's error may quote what it sent; a backend fault's details are for operators.
    chat = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    for error, stream in (
        (InvalidArgument("arguments must be JSON text, got 'my secret plan'"), False),
        (InvalidArgument("arguments must be JSON text, got 'my secret plan'"), True),
        (Unavailable("upstream at 10.0.0.7:443 refused"), False),
    ):
        fake_mesh.failing.error = error
        fake_mesh.failing.stream_before_error = ["partial"] if stream else []
        with caplog.at_level(logging.INFO, logger="aimesh.gateway"):
            if stream:
                await failing_client.post("/v1/chat/completions", json=chat, headers=user())
            else:
                await failing_client.post("/v1/summarize", json={"text": "t"}, headers=user())
    fake_mesh.failing.stream_before_error = []
    failures = [r for r in caplog.records if "failed" in r.getMessage() and hasattr(r, "grpc_code")]
    assert [r.grpc_code for r in failures] == [
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "UNAVAILABLE",
    ]
    assert not any(hasattr(r, "grpc_details") for r in failures[:2])
    assert "10.0.0.7" in failures[2].grpc_details  # type: ignore[attr-defined]
    assert "my secret plan" not in caplog.text


@pytest.mark.parametrize(
    ("code", "status"),
    [(grpc.StatusCode.PERMISSION_DENIED, 403), (grpc.StatusCode.UNAUTHENTICATED, 401)],
)
async def test_auth_codes_of_backends_map_to_http(
    failing_client: httpx.AsyncClient, fake_mesh: FakeMesh, code: grpc.StatusCode, status: int
) -> None:
    fake_mesh.failing.error = _abort(code)
    response = await failing_client.post("/v1/summarize", json={"text": "t"}, headers=user())
    assert_problem(response, status)


def test_status_mapping_table() -> None:
    assert grpc_status_to_http(grpc.StatusCode.NOT_FOUND, "gone") == (404, "gone")
    assert grpc_status_to_http(grpc.StatusCode.DATA_LOSS, "disk 3 broke")[0] == 502
    assert "disk" not in grpc_status_to_http(grpc.StatusCode.DATA_LOSS, "disk 3 broke")[1]
    assert grpc_status_to_http(grpc.StatusCode.UNKNOWN, None)[0] == 502
    assert grpc_status_to_http(grpc.StatusCode.INTERNAL, "x")[0] == 502
    assert grpc_status_to_http(grpc.StatusCode.INVALID_ARGUMENT, "")[1] == "Bad Request"


async def test_unknown_collection_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/collections/never-created/search", json={"query": "q"}, headers=user()
    )
    problem = assert_problem(response, 404)
    assert "never-created" in problem["detail"]
    assert problem["instance"] == "/v1/collections/never-created/search"


async def test_unreachable_backend_is_503(fake_mesh: FakeMesh) -> None:
    closed = f"127.0.0.1:{free_port()}"
    settings = settings_for(
        router_addr=closed, retrieval_addr=closed, embedding_addr=fake_mesh.embedding_addr
    )
    async with running(create_app(settings)) as client:
        for response in (
            await client.post("/v1/collections/docs/search", json={"query": "q"}, headers=ADMIN),
            await client.get("/v1/models", headers=ADMIN),
        ):
            problem = assert_problem(response, 503)
            assert closed not in response.text
            assert "unavailable" in problem["detail"]


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    for raw in (b'{"query": "unterminated', b"{'single': 'quotes'}", b"[1, 2,]"):
        response = await client.post(
            "/v1/collections/docs/search",
            content=raw,
            headers={**user(), "Content-Type": "application/json"},
        )
        problem = assert_problem(response, 400)
        assert "malformed JSON" in problem["detail"]


@pytest.mark.parametrize("top_k", [0, -1, 101, 10_000, "many"])
async def test_out_of_range_top_k_is_422_naming_the_field(
    client: httpx.AsyncClient, top_k: object
) -> None:
    response = await client.post(
        "/v1/collections/docs/search", json={"query": "q", "top_k": top_k}, headers=user()
    )
    problem = assert_problem(response, 422)
    assert [error["field"] for error in problem["errors"]] == ["body.top_k"]
    assert "body.top_k" in problem["detail"]


async def test_validation_errors_never_echo_the_input(client: httpx.AsyncClient) -> None:
    secret = "sk-please-do-not-echo-me-" + "x" * 20
    response = await client.post(
        "/v1/collections/docs/search", json={"query": "q", "top_k": secret}, headers=user()
    )
    assert_problem(response, 422)
    assert secret not in response.text


@pytest.mark.parametrize(
    "name", ["bad name", "-leading-dash", "_underscore", "dots.are.bad", "x" * 65, "ünïcode"]
)
async def test_bad_collection_name_is_422(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post(
        f"/v1/collections/{name}/search", json={"query": "q"}, headers=user()
    )
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["field"] == "path.collection"


async def test_unknown_path_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v2/nothing"), 404)
    assert_problem(await client.put("/v1/ask", json={}, headers=user()), 405)


async def test_unexpected_exception_is_a_generic_500(
    fake_mesh: FakeMesh, caplog: pytest.LogCaptureFixture
) -> None:
    app: FastAPI = create_app(fake_mesh.settings())

    async def explode() -> None:
        raise RuntimeError("database password is hunter2")

    app.add_api_route("/v1/explode", explode)
    app.add_api_route("/v1/completions", explode, methods=["POST"])  # an OpenAI path
    async with running(app) as client:
        with caplog.at_level(logging.ERROR, logger="aimesh.gateway"):
            response = await client.get("/v1/explode", headers={"X-Request-ID": "boom-1"})
            openai_shaped = assert_problem(await client.post("/v1/completions"), 500)
    assert openai_shaped["error"]["type"] == "api_error"
    assert "internal error" in openai_shaped["error"]["message"]
    assert "hunter2" not in str(openai_shaped)
    problem = assert_problem(response, 500)
    assert problem["request_id"] == "boom-1"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    assert "internal error" in problem["detail"]
    # The details are in the log, with the request id, for the operator.
    logged = [r for r in caplog.records if r.exc_info and r.getMessage() == "unhandled error"]
    assert logged
    assert getattr(logged[0], "request_id", None) == "boom-1"
    assert "hunter2" in str(logged[0].exc_info[1])  # type: ignore[index]


async def test_backend_errors_are_counted_by_service_and_code(
    failing_client: httpx.AsyncClient, failing_app: FastAPI, fake_mesh: FakeMesh
) -> None:
    registry = state_of(failing_app).metrics.registry
    labels = {"service": "aimesh.llm.v1.LLMRouterService", "code": "UNAVAILABLE"}
    before = registry.get_sample_value("aimesh_upstream_errors_total", labels) or 0.0
    fake_mesh.failing.error = Unavailable("down")
    response = await failing_client.post("/v1/summarize", json={"text": "t"}, headers=user())
    assert_problem(response, 503)
    for _ in range(100):  # the status is recorded by a task that follows the call
        after = registry.get_sample_value("aimesh_upstream_errors_total", labels)
        if after == before + 1:
            break
        await asyncio.sleep(0.01)
    assert after == before + 1
    text = (await failing_client.get("/metrics")).text
    assert 'aimesh_upstream_errors_total{code="UNAVAILABLE"' in text
