"""The built web app served by the gateway (AIMESH_WEB_DIR), from a temporary dist folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from aimesh_gateway.main import create_app
from aimesh_gateway.state import state_of
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import assert_problem, running, user

INDEX = "<!doctype html><html><body><div id=app></div><script src=/assets/app-1a2b.js></script>"
SCRIPT = "console.log('aimesh')"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    (root / "index.html").write_text(INDEX)
    (root / "assets").mkdir()
    (root / "assets" / "app-1a2b.js").write_text(SCRIPT)
    (root / "assets" / "app-1a2b.css").write_text("body{margin:0}")
    (root / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    # A file beside the folder that a path traversal would reach.
    (root.parent / "secret.txt").write_text("do not serve")
    return root


@pytest.fixture
async def web_client(fake_mesh: FakeMesh, dist: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        fake_mesh.settings(
            web_dir=dist,
        )
    )
    async with running(app) as client:
        yield client


async def test_index_and_spa_routes_serve_index_html(web_client: httpx.AsyncClient) -> None:
    for path in ("/", "/index.html", "/chat", "/admin/feedback", "/collections/docs/x"):
        response = await web_client.get(path)
        assert response.status_code == 200, path
        assert response.text == INDEX, path
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["cache-control"] == "no-cache"
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-request-id"]


async def test_hashed_assets_are_cached_for_a_year(web_client: httpx.AsyncClient) -> None:
    script = await web_client.get("/assets/app-1a2b.js")
    assert script.status_code == 200
    assert script.text == SCRIPT
    assert "javascript" in script.headers["content-type"]
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    icon = await web_client.get("/favicon.svg")
    assert icon.status_code == 200
    assert icon.headers["cache-control"] == "no-cache"
    head = await web_client.head("/assets/app-1a2b.css")
    assert head.status_code == 200
    assert head.content == b""
    # A stale hashed asset is a 404, never index.html served as a script.
    missing = await web_client.get("/assets/app-0000.js")
    assert_problem(missing, 404)


async def test_api_docs_and_probes_are_never_shadowed(web_client: httpx.AsyncClient) -> None:
    assert (await web_client.get("/healthz")).json() == {"status": "ok"}
    assert (await web_client.get("/openapi.json")).json()["info"]["title"] == "aimesh gateway"
    assert "swagger" in (await web_client.get("/docs")).text.lower()
    assert "redoc" in (await web_client.get("/redoc")).text.lower()
    assert "aimesh_http_requests_total" in (await web_client.get("/metrics")).text
    models = await web_client.get("/v1/models", headers=user())
    assert models.status_code == 200
    # Unknown API paths stay 404 problems; a wrong method on a route stays 405.
    for path in ("/v1", "/v1/", "/v1/nothing-here", "/v1/collections/docs/unknown", "/docs/x"):
        assert_problem(await web_client.get(path, headers=user()), 404)
    assert_problem(await web_client.post("/v1/nothing-here", json={}), 404)
    assert_problem(await web_client.delete("/v1/models", headers=user()), 405)
    # Only GET and HEAD reach the web app.
    assert_problem(await web_client.post("/chat", json={}), 404)


async def test_no_file_outside_the_folder_is_served(web_client: httpx.AsyncClient) -> None:
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/../../secret.txt"):
        response = await web_client.get(path)
        assert "do not serve" not in response.text, path


async def test_without_web_dir_nothing_is_served_at_the_root(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/"), 404)
    assert_problem(await client.get("/chat"), 404)


@pytest.mark.parametrize("content", ["missing", "empty"])
def test_a_web_dir_without_a_build_stops_the_start(tmp_path: Path, content: str) -> None:
    web_dir = tmp_path / "dist"
    if content == "empty":
        web_dir.mkdir()
    env = {**os.environ, "AIMESH_WEB_DIR": str(web_dir)}
    result = subprocess.run(
        [sys.executable, "-c", "from aimesh_gateway.main import main; main()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "AIMESH_WEB_DIR" in result.stderr
    expected = "is not a directory" if content == "missing" else "has no index.html"
    assert expected in result.stderr
    assert "npm run build" in result.stderr
    assert "Traceback" not in result.stderr


def test_unset_web_dir_is_no_static_serving(app: FastAPI) -> None:
    assert state_of(app).settings.web_dir is None
