"""App assembly: lifespan, OpenAPI, CORS, and the console entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway import main as main_module
from aimesh_gateway.main import create_app
from aimesh_gateway.state import state_of
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import ADMIN, running, user


async def test_lifespan_opens_and_closes_the_channels(fake_mesh: FakeMesh) -> None:
    app = create_app(fake_mesh.settings())
    async with running(app) as client:
        backends = state_of(app).backends
        assert set(backends.channels) == {"llm-router", "retrieval", "embedding"}
        assert (await client.get("/v1/models", headers=ADMIN)).status_code == 200
    with pytest.raises(grpc.aio.UsageError, match="Channel is closed"):
        await backends.llm_router.ListModels(llm_pb2.ListModelsRequest())


async def test_openapi_declares_bearer_security_and_problems(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearer"]["description"],
    }
    search = schema["paths"]["/v1/collections/{collection}/search"]["post"]
    assert search["security"] == [{"bearer": []}]
    assert "application/problem+json" in search["responses"]["422"]["content"]
    assert "Problem" in schema["components"]["schemas"]
    assert "FieldError" in schema["components"]["schemas"]
    assert "security" not in schema["paths"]["/healthz"]["get"]
    request_schema = schema["components"]["schemas"]["SearchRequest"]
    assert request_schema["properties"]["top_k"]["maximum"] == 100
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


async def test_cors_allows_configured_origins_without_credentials(fake_mesh: FakeMesh) -> None:
    settings = fake_mesh.settings(
        cors_origins=["https://app.example"],
    )
    async with running(create_app(settings)) as client:
        preflight = await client.options(
            "/v1/ask",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in preflight.headers
        # The openai npm package's own headers pass the preflight (a Vue app can use it).
        sdk = await client.options(
            "/v1/chat/completions",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,"
                "x-stainless-lang,x-stainless-package-version,x-stainless-os,x-stainless-arch,"
                "x-stainless-runtime,x-stainless-runtime-version,x-stainless-retry-count,"
                "x-stainless-timeout",
            },
        )
        assert sdk.status_code == 200, sdk.text
        simple = await client.get("/v1/models", headers={**user(), "Origin": "https://app.example"})
        exposed = {
            h.strip().lower() for h in simple.headers["access-control-expose-headers"].split(",")
        }
        assert {"x-request-id", "retry-after", "ratelimit-remaining"} <= exposed
        other = await client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_no_cors_headers_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers


def test_console_script_refuses_bad_settings_with_a_clear_message() -> None:
    env = {
        **os.environ,
        "AIMESH_JWT_SECRET": "too-short-secret",
        "AIMESH_PORT": "not-a-port",
    }
    result = subprocess.run(
        [sys.executable, "-c", "from aimesh_gateway.main import main; main()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "AIMESH_JWT_SECRET" in result.stderr
    assert "AIMESH_PORT" in result.stderr
    assert "too-short-secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_keeps_idle_connections_longer_than_clients_and_balancers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """uvicorn's 5 s keep-alive equals httpx's pool expiry: a client could send on a
    connection the gateway is closing. The gateway's default is above both (issue 28)."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(options))
    monkeypatch.setattr(main_module, "_configure_logging", lambda settings: None)
    monkeypatch.setenv("AIMESH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("AIMESH_KEEP_ALIVE_SECONDS", raising=False)
    main_module.main()
    assert seen["timeout_keep_alive"] == 75 > 60

    monkeypatch.setenv("AIMESH_KEEP_ALIVE_SECONDS", "120")
    main_module.main()
    assert seen["timeout_keep_alive"] == 120
