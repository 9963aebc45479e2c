"""Credentials, settings and assertions shared by the gateway tests."""

from __future__ import annotations

import atexit
import base64
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from aimesh_gateway.core.config import Settings
from tests.conftest import make_jwt

ADMIN_KEY = "am_test_admin_key_0123456789abcdef"
JWT_SECRET = "test-jwt-secret-long-enough-for-hs256-hs384-and-hs512-0123456789"
TENANT = "acme"


_DATA_DIR: Path | None = None


def test_data_dir() -> Path:
    """One temporary data directory (SQLite database) for this test process."""
    global _DATA_DIR
    if _DATA_DIR is None:
        _DATA_DIR = Path(tempfile.mkdtemp(prefix="aimesh-gateway-test-"))
        atexit.register(shutil.rmtree, _DATA_DIR, True)
    return _DATA_DIR


def settings_for(
    *, router_addr: str, retrieval_addr: str, embedding_addr: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "admin_api_key": ADMIN_KEY,
        "jwt_secret": JWT_SECRET,
        "llm_router_service_addr": router_addr,
        "retrieval_service_addr": retrieval_addr,
        "embedding_service_addr": embedding_addr,
        "request_timeout_seconds": 10.0,
        "data_dir": test_data_dir(),
        **overrides,
    }
    return Settings(**values)


def token(tenant: str | None = TENANT, roles: list[str] | None = None, **kwargs: Any) -> str:
    return make_jwt(JWT_SECRET, tenant=tenant, roles=roles, **kwargs)


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def user(tenant: str = TENANT) -> dict[str, str]:
    return bearer(token(tenant, ["user"]))


def editor(tenant: str = TENANT) -> dict[str, str]:
    return bearer(token(tenant, ["editor"]))


ADMIN = bearer(ADMIN_KEY)


def unsigned_jwt(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64(header)}.{b64(claims)}.{signature}"


def valid_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "tester",
        "aud": "aimesh",
        "iss": "aimesh-gateway",
        "exp": now + 300,
        "tenant_id": TENANT,
        **overrides,
    }


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status`` and no internals in it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    assert ".py" not in response.text
    return body


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and yield a client that calls it in process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client
