"""Run the whole aimesh mesh as local processes: what `make run` and the test suite use.

Each service starts with its own console script, exactly as its image does, configured
only through environment variables. With ``model_server`` the local model server
(``aimesh-model-server``, SmolLM2-135M-Instruct converted into ``<data>/models`` on its
first start) runs too, and the router serves chat from it (alias ``local-model``); it is
optional: the mesh is ready before the model is, chat falls back to the extractive
provider until then, and the mesh keeps running if the model server exits. Children run
in their own process groups and get SIGTERM when this process dies (Linux
``PR_SET_PDEATHSIG``), so no orphans are left.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx
import yaml

BIN = Path(sys.executable).parent
WEB_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"


# Each service is started through this prelude, which asks the kernel to SIGTERM it when the
# launcher dies, however it dies (Linux PR_SET_PDEATHSIG; elsewhere a no-op), and then execs
# the service in the same process. It is not a ``preexec_fn``: that makes Python fork()
# rather than vfork(), and where the launcher has used gRPC (the test suite, the soak, the
# benchmarks) gRPC's fork handlers restart its poller in the child, whose epoll fd
# ``close_fds`` has just closed, and abort the child before it execs ("epoll_wait error: Bad
# file descriptor", grpc/grpc#43055, grpcio >= 1.81): about one child in thirty.
_PRELUDE = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
except OSError:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit("the launcher exited before this service started")
os.execvp(sys.argv[2], sys.argv[2:])
"""


def with_prelude(command: list[str]) -> list[str]:
    """``command`` run through :data:`_PRELUDE` (a Python without site, so it starts fast)."""
    return [sys.executable, "-I", "-S", "-c", _PRELUDE, str(os.getpid()), *command]


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Ports:
    """Where each service listens (metrics ports start at 9101: Milvus takes 9091 and up)."""

    gateway: int = 8000
    embedding: int = 50051
    retrieval: int = 50052
    llm_router: int = 50053
    embedding_metrics: int = 9101
    retrieval_metrics: int = 9102
    llm_router_metrics: int = 9103
    model_server: int = 8090

    @classmethod
    def free(cls) -> Ports:
        """All ports picked free: for tests, which may run beside a `make run`."""
        return cls(*(free_port() for _ in range(8)))


@dataclass
class ServiceProcess:
    name: str
    command: list[str]
    env: dict[str, str]
    # An optional service may exit (or be slow to start) without stopping the mesh.
    optional: bool = False
    exit_reported: bool = False
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _pump: threading.Thread | None = field(default=None, repr=False)

    def start(self, log_dir: Path | None) -> None:
        stdout: int | IO[bytes]
        if log_dir is not None:
            self.log_path = log_dir / f"{self.name}.log"
            stdout = self.log_path.open("ab")
        else:
            stdout = subprocess.PIPE
        self.process = subprocess.Popen(
            with_prelude(self.command),
            env=self.env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if log_dir is not None:
            assert not isinstance(stdout, int)
            stdout.close()
        else:
            self._pump = threading.Thread(target=self._prefix_output, daemon=True)
            self._pump.start()

    def _prefix_output(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        width = 11
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            print(f"{self.name:>{width}} | {line}", flush=True)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def wait_or_kill(self, timeout: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        if self._pump is not None:
            self._pump.join(timeout=2)


class MeshStartError(RuntimeError):
    """A service exited or the gateway did not become ready in time."""


class Mesh:
    """The four services as local processes, on embedded defaults."""

    def __init__(
        self,
        data_dir: Path,
        *,
        ports: Ports | None = None,
        admin_api_key: str | None = None,
        jwt_secret: str | None = None,
        extra_env: Mapping[str, str | None] | None = None,
        log_dir: Path | None = None,
        log_format: str = "text",
        model_server: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.model_server = model_server
        self.ports = ports or Ports()
        self.admin_api_key = admin_api_key or "am_dev_" + secrets.token_urlsafe(24)
        self.jwt_secret = jwt_secret or secrets.token_urlsafe(48)
        self.log_dir = log_dir
        base: dict[str, str] = {
            **os.environ,
            "AIMESH_DATA_DIR": str(data_dir),
            "AIMESH_LOG_FORMAT": log_format,
            "EMBEDDING_SERVICE_ADDR": f"127.0.0.1:{self.ports.embedding}",
            "RETRIEVAL_SERVICE_ADDR": f"127.0.0.1:{self.ports.retrieval}",
            "LLM_ROUTER_SERVICE_ADDR": f"127.0.0.1:{self.ports.llm_router}",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        for name, value in (extra_env or {}).items():  # None removes an inherited variable
            if value is None:
                base.pop(name, None)
            else:
                base[name] = value

        def env(port: int, metrics_port: int | None, host: str, **more: str) -> dict[str, str]:
            values = {**base, "AIMESH_PORT": str(port), "AIMESH_HOST": host, **more}
            if metrics_port is not None:
                values["AIMESH_METRICS_PORT"] = str(metrics_port)
            return values

        p = self.ports
        router_more: dict[str, str] = {}
        if model_server:
            router_more["AIMESH_LLM_LOCAL_MODEL_URL"] = self.model_server_url + "/v1"
        self.services = [
            ServiceProcess(
                "embedding",
                [str(BIN / "aimesh-embedding")],
                env(p.embedding, p.embedding_metrics, "127.0.0.1"),
            ),
            ServiceProcess(
                "retrieval",
                [str(BIN / "aimesh-retrieval")],
                env(p.retrieval, p.retrieval_metrics, "127.0.0.1"),
            ),
            ServiceProcess(
                "llm-router",
                [str(BIN / "aimesh-llm-router")],
                env(p.llm_router, p.llm_router_metrics, "127.0.0.1", **router_more),
            ),
            ServiceProcess(
                "gateway",
                [str(BIN / "aimesh-gateway")],
                env(
                    p.gateway,
                    None,
                    "127.0.0.1",
                    AIMESH_ADMIN_API_KEY=self.admin_api_key,
                    AIMESH_JWT_SECRET=self.jwt_secret,
                ),
            ),
        ]
        if model_server:
            # Its own process, started first: the model loads while the mesh starts.
            self.services.insert(
                0,
                ServiceProcess(
                    "model",
                    [str(BIN / "aimesh-model-server")],
                    env(p.model_server, None, "127.0.0.1"),
                    optional=True,
                ),
            )

    @property
    def model_server_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.model_server}"

    def model_ready(self) -> bool:
        """Whether the model server answers (it binds its port once the model is loaded)."""
        try:
            return httpx.get(f"{self.model_server_url}/health", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    def service(self, name: str) -> ServiceProcess:
        return next(s for s in self.services if s.name == name)

    def check_ports(self) -> None:
        p = self.ports
        busy = [
            port
            for port in (
                p.gateway,
                p.embedding,
                p.retrieval,
                p.llm_router,
                p.embedding_metrics,
                p.retrieval_metrics,
                p.llm_router_metrics,
                *((p.model_server,) if self.model_server else ()),
            )
            if port_in_use(port)
        ]
        if busy:
            raise MeshStartError(
                f"port(s) {', '.join(map(str, busy))} already in use: is another aimesh running?"
            )

    def start(self, timeout: float = 180.0) -> None:
        self.check_ports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for service in self.services:
            service.start(self.log_dir)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                for service in self.services:
                    code = service.exited()
                    if code is not None and not service.optional:
                        raise MeshStartError(
                            f"{service.name} exited with status {code}\n{service.log_tail()}"
                        )
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
        raise MeshStartError(f"the gateway was not ready within {timeout:.0f} s")

    def stop(self, grace: float = 15.0) -> None:
        # Gateway first so no new work reaches the backends, then the rest together.
        gateway = self.service("gateway")
        backends = [service for service in self.services if service is not gateway]
        gateway.terminate()
        gateway.wait_or_kill(grace)
        for service in backends:
            service.terminate()
        for service in backends:
            service.wait_or_kill(grace)

    def __enter__(self) -> Mesh:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _stable_secret(path: Path, prefix: str = "") -> str:
    """A secret kept in the data dir so the dev key stays the same between runs."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = prefix + secrets.token_urlsafe(24)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def web_dir_setting(environ: Mapping[str, str], dist: Path = WEB_DIST) -> str | None:
    """AIMESH_WEB_DIR for the gateway: the caller's, else web/dist once `make web` built it."""
    if environ.get("AIMESH_WEB_DIR"):
        return environ["AIMESH_WEB_DIR"]
    return str(dist) if (dist / "index.html").is_file() else None


def web_note(url: str, web_dir: str | None) -> str:
    if web_dir is None:
        return "not built (needs Node 20 and npm: `make web`, then restart)"
    return f"{url}/  (sign in with the dev API key, or a user made with POST /v1/admin/users)"


def model_note(data_dir: Path, url: str, hosted: bool) -> str:
    """What the banner says about the local model server (started, converting, serving)."""
    converted = data_dir / "models"
    first = not converted.is_dir() or not any(
        path.name.endswith(("-int4-cpu", "-int4-cuda", "-openvino")) for path in converted.iterdir()
    )
    serves = "listed as local-model" if hosted else "serves chat (alias local-model)"
    loading = (
        f"first start: converting SmolLM2-135M-Instruct into {converted} (seconds)"
        if first
        else "loading the converted model"
    )
    return (
        f"{url} {serves}; {loading}. Until it is ready chat answers extractively "
        "(fallback to default); summaries and ask stay extractive (better grounded)."
    )


def served_aliases(environ: Mapping[str, str]) -> str:
    """The banner's list of model aliases and their providers: those of the models file
    (``AIMESH_MODELS_FILE``) when one is set, else the built-in default."""
    path = environ.get("AIMESH_MODELS_FILE")
    if not path:
        if environ.get("OPENAI_API_KEY"):
            return "default (openai)"
        return "default (local: extractive, no key)"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        return f"from {path} (unreadable here: {type(error).__name__}; the router reports why)"
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict) or not models:
        return f"from {path} (no models listed; the router reports why)"
    return ", ".join(
        f"{alias} ({spec.get('provider', '?') if isinstance(spec, dict) else '?'})"
        for alias, spec in models.items()
    )


def banner(url: str, admin_key: str, web: str, model_line: str) -> str:
    """What ``make run`` prints once the mesh is ready: a document to store first, then a
    question about it, each a curl that works as printed."""
    auth = f'-H "Authorization: Bearer {admin_key}"'
    return (
        "\n"
        f"  aimesh is ready: {url}   (API docs: {url}/docs)\n"
        f"  web app:         {web}\n"
        f"  local model:     {model_line}\n"
        f"  dev API key:     {admin_key}   (kept in the data dir; the aimesh CLI reads it)\n\n"
        "  Store a document, then ask about it:\n\n"
        f"  curl -s {url}/v1/collections/docs/documents {auth} \\\n"
        '       -H "Content-Type: application/json" \\\n'
        '       -d \'{"documents": [{"id": "about", "text": "aimesh is an open AI '
        "backend. It keeps keys and prompts on the server.\"}]}'\n\n"
        f"  curl -s {url}/v1/ask {auth} \\\n"
        '       -H "Content-Type: application/json" \\\n'
        '       -d \'{"question": "What is aimesh?", "collection": "docs"}\'\n\n'
        "  Ctrl-C stops every service.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start the whole aimesh mesh locally.")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("AIMESH_DATA_DIR", ".aimesh"))
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIMESH_PORT", "8000")))
    parser.add_argument(
        "--no-model",
        action="store_true",
        help="Do not start the local model server (chat then answers extractively).",
    )
    parser.add_argument(
        "--model-port",
        type=int,
        default=int(os.environ.get("AIMESH_MODEL_SERVER_PORT", "8090")),
        help="Port of the local model server.",
    )
    args = parser.parse_args(argv)
    data_dir: Path = args.data_dir.resolve()
    admin_key = os.environ.get("AIMESH_ADMIN_API_KEY") or _stable_secret(
        data_dir / "dev-admin-api-key", "am_dev_"
    )
    jwt_secret = os.environ.get("AIMESH_JWT_SECRET") or _stable_secret(data_dir / "dev-jwt-secret")
    web_dir = web_dir_setting(os.environ)
    mesh = Mesh(
        data_dir,
        ports=Ports(gateway=args.port, model_server=args.model_port),
        admin_api_key=admin_key,
        jwt_secret=jwt_secret,
        extra_env={"AIMESH_WEB_DIR": web_dir},
        model_server=not args.no_model,
    )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    aliases = served_aliases(os.environ)
    print(f"starting aimesh (data in {data_dir}, model aliases: {aliases}) ...", flush=True)
    model_line = "off (--no-model): chat answers extractively"
    if mesh.model_server:
        hosted = bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("AIMESH_MODELS_FILE"))
        model_line = model_note(data_dir, mesh.model_server_url, hosted)
        print(f"starting the local model server: {model_line}", flush=True)
    try:
        mesh.start()
    except MeshStartError as error:
        print(f"aimesh did not start: {error}", file=sys.stderr)
        mesh.stop()
        return 1
    print(banner(mesh.url, admin_key, web_note(mesh.url, web_dir), model_line), flush=True)
    model_announced = False
    while not stop.is_set():
        for service in mesh.services:
            code = service.exited()
            if code is not None and service.optional:
                if not service.exit_reported:
                    print(
                        f"{service.name} exited with status {code}; the mesh goes on without "
                        "it (chat answers extractively)",
                        file=sys.stderr,
                    )
                    service.exit_reported = True
            elif code is not None:
                print(f"{service.name} exited with status {code}; stopping", file=sys.stderr)
                stop.set()
        if mesh.model_server and not model_announced and mesh.model_ready():
            model_announced = True
            print(f"  local model ready: chat now streams from {mesh.model_server_url}", flush=True)
        stop.wait(1.0)
    print("stopping aimesh ...", flush=True)
    mesh.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
