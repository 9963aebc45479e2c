"""The web app end to end in Debian's Chromium, against the real four-service mesh serving
the built app (AIMESH_WEB_DIR): sign in -> upload a file -> its job finishes -> search ->
a chat grounded in the collection streams an answer citing the file -> a plain chat streams
from the local model server (alias local-model, in more than one chunk) -> summarize the
stored document -> admin (create and revoke a key) -> phone width -> sign out -> sign in with
an API key (service user) -> sign out.

The browser side is web/e2e/run.mjs (playwright-core driving /usr/bin/chromium); its
screenshots land in tests/artifacts/web/ (gitignored). Grounded answers are served by the
extractive provider by default, so the test document's sentences answer the question and
the answer must quote "1874"; plain chat is served by the model server, which the mesh
starts beside the four services (on the packaged model the session converted once).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scripts.devmesh import Mesh, Ports
from tests.conftest import with_converted_model
from tests.web.conftest import ARTIFACTS, DIST, WEB, build_problem, node_problem

CHROMIUM = Path("/usr/bin/chromium")
DOCUMENT = Path(__file__).parent / "data" / "lighthouse.md"
QUESTION = "When was the Harbor Lighthouse built?"
EXPECTED = "1874"
CHAT_MODEL = "local-model"
# The model server loads the converted model; slow on a busy 2-core runner.
MODEL_READY_SECONDS = 420

pytestmark = pytest.mark.slow


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"
    return node_problem() or build_problem()


@pytest.fixture(scope="module")
def web_mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    """The four services and the model server (loading the model the session converted) on
    free ports, the gateway serving web/dist at /."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    models: Path = request.getfixturevalue("converted_packaged_model")
    root = tmp_path_factory.mktemp("web-mesh")
    running = Mesh(
        with_converted_model(root / "data", models),
        ports=Ports.free(),
        log_dir=root / "logs",
        log_format="json",
        extra_env={
            "OPENAI_API_KEY": None,
            "AIMESH_OPENAI_API_KEY": None,
            "AIMESH_WEB_DIR": str(DIST),
        },
        model_server=True,
    )
    with running:
        deadline = time.monotonic() + MODEL_READY_SECONDS
        while not running.model_ready():
            model = running.service("model")
            assert model.exited() is None, model.log_tail()
            assert time.monotonic() < deadline, "the model server was not ready in time"
            time.sleep(1)
        yield running


def test_web_app_end_to_end(web_mesh: Mesh, tmp_path: Path) -> None:
    # The app is served at / (and a deep link falls back to it), the API beside it.
    index = httpx.get(f"{web_mesh.url}/documents", timeout=10)
    assert index.status_code == 200
    assert '<div id="app">' in index.text

    username, password = "e2e-ada", secrets.token_urlsafe(18)
    created = httpx.post(
        f"{web_mesh.url}/v1/admin/users",
        headers={"Authorization": f"Bearer {web_mesh.admin_api_key}"},
        json={"username": username, "password": password, "roles": ["admin"]},
        timeout=30,
    )
    assert created.status_code == 201, created.text

    shots = tmp_path / "shots"
    started = time.monotonic()
    result = subprocess.run(
        ["node", str(WEB / "e2e" / "run.mjs")],
        cwd=WEB,
        env={
            **os.environ,
            "AIMESH_E2E_BASE_URL": web_mesh.url,
            "AIMESH_E2E_USERNAME": username,
            "AIMESH_E2E_PASSWORD": password,
            "AIMESH_E2E_FILE": str(DOCUMENT),
            "AIMESH_E2E_QUESTION": QUESTION,
            "AIMESH_E2E_EXPECT": EXPECTED,
            "AIMESH_E2E_SCREENSHOTS": str(shots),
            "AIMESH_E2E_CHROMIUM": str(CHROMIUM),
            "AIMESH_E2E_CHAT_MODEL": CHAT_MODEL,
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    if shots.exists():
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for shot in shots.glob("*.png"):
            shutil.copy2(shot, ARTIFACTS / shot.name)
    gateway_log = web_mesh.service("gateway").log_tail(30)
    assert result.returncode == 0, (
        f"{result.stdout}\n{result.stderr}\n--- gateway log ---\n{gateway_log}"
    )

    steps = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [s["step"] for s in steps] == [
        "sign-in",
        "upload",
        "search",
        "chat",
        "model-chat",
        "summarize",
        "admin",
        "phone-width",
        "sign-out",
        "api-key",
        "all",
    ]
    model_chat = next(s for s in steps if s["step"] == "model-chat")
    assert model_chat["model"] == CHAT_MODEL
    assert model_chat["chunks"] > 1  # streamed token by token, not in one piece
    for name in ("01-sign-in", "02-documents", "03-search", "04-chat-citation", "05-chat"):
        assert (shots / f"{name}.png").stat().st_size > 5_000, name
    print(f"web e2e: {elapsed:.1f} s in the browser; steps {steps}")
