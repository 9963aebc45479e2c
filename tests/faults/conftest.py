"""The fault suite's mesh: the four services as real processes (two replicas of embedding,
retrieval and llm-router behind round-robin channels), a private redis-server, a real
Milvus server and a private PostgreSQL database for the two retrieval replicas, and a
misbehaving OpenAI-compatible upstream, all on free ports.

Built on ``scripts.devmesh.Mesh`` (the launcher of ``make run``) with the second replicas
added as more :class:`ServiceProcess` entries, so stopping the mesh stops every service the
suite started; the Milvus server, the database, Redis and the upstream are stopped (the
database dropped) after it. Both retrieval replicas share one store, as in k8s: the Milvus
server (``milvus-server`` from PyPI ``milvus==2.3.5``: no BM25, so its collections are
dense-only) and the ingestion job table in PostgreSQL, whose leases let one replica take
over the jobs of another.

The router's models file routes the aliases ``flaky`` (no fallback) and ``flaky-chain``
(falling back to ``default``, the local extractive provider) to the upstream
(:class:`tests.llm_router.openai_server.FakeOpenAI` in a thread), which misbehaves on
command.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from scripts.devmesh import BIN, Mesh, Ports, ServiceProcess, free_port
from scripts.milvus_server import MilvusServerFailed, MilvusServerMissing, run_milvus_server
from tests.conftest import POSTGRES_ADMIN_DSN, PrivateRedis, make_jwt
from tests.llm_router.openai_server import ThreadedFakeOpenAI

REPLICATED = ("embedding", "retrieval", "llm-router")
ADDR_ENV = {
    "embedding": "EMBEDDING_SERVICE_ADDR",
    "retrieval": "RETRIEVAL_SERVICE_ADDR",
    "llm-router": "LLM_ROUTER_SERVICE_ADDR",
}
# One attempt of the upstream aliases: a hang becomes a timeout after this long.
UPSTREAM_TIMEOUT_SECONDS = 3.0


def say(check: str, message: str) -> None:
    """What a check tried or saw, printed (``make test-faults`` runs pytest with -s)."""
    print(f"[faults] {check}: {message}", flush=True)


def upstream_alias(base_url: str, **more: Any) -> dict[str, Any]:
    """An alias on the misbehaving upstream: one attempt (no retries), a short timeout."""
    return {
        "provider": "openai",
        "model": "test-model",
        "base_url": base_url,
        "timeout_seconds": UPSTREAM_TIMEOUT_SECONDS,
        "deadline_seconds": 20,
        "max_retries": 0,
        "max_tokens": 64,
        "privacy": "off",
        **more,
    }


def models_file(path: Path, base_url: str) -> Path:
    """The router's models file: ``default``/``fast`` extractive as without a file, and the
    two aliases on the upstream. The breaker never opens: every check sees its own failure."""
    config = {
        "models": {
            "default": {"provider": "local", "max_retries": 0},
            "fast": {"provider": "local", "max_retries": 0},
            "flaky": upstream_alias(base_url),
            "flaky-chain": upstream_alias(base_url, fallbacks=["default"]),
        },
        "retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.05},
        "circuit_breaker": {"failure_threshold": 1000, "cooldown_seconds": 60},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _postgres(statement: str) -> None:
    """Run one statement on the machine's PostgreSQL (the job database is made and dropped
    outside any event loop: the suite is synchronous); skip when it is not reachable."""
    import asyncpg  # type: ignore[import-untyped]

    async def run() -> None:
        try:
            admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
        except (OSError, asyncpg.PostgresError) as error:  # pragma: no cover - machine
            pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {error}")
        try:
            await admin.execute(statement)
        finally:
            await admin.close()

    asyncio.run(run())


class FaultMesh:
    """A running :class:`Mesh` plus its second replicas, its private Redis, the Milvus server
    and job database the retrieval replicas share, and the misbehaving upstream."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.redis = PrivateRedis()
        self.upstream = ThreadedFakeOpenAI()
        self.ports = Ports.free()
        self.second = {name: (free_port(), free_port()) for name in REPLICATED}
        self._started = contextlib.ExitStack()
        self._mesh: Mesh | None = None

    @property
    def mesh(self) -> Mesh:
        assert self._mesh is not None, "the fault mesh is not started"
        return self._mesh

    def _build(self, milvus_uri: str, jobs_url: str, models: Path) -> Mesh:
        first = {
            "embedding": self.ports.embedding,
            "retrieval": self.ports.retrieval,
            "llm-router": self.ports.llm_router,
        }
        addresses = {
            ADDR_ENV[name]: f"ipv4:127.0.0.1:{first[name]},127.0.0.1:{self.second[name][0]}"
            for name in REPLICATED
        }
        mesh = Mesh(
            self.root / "data",
            ports=self.ports,
            log_dir=self.root / "logs",
            log_format="json",
            extra_env={
                "OPENAI_API_KEY": None,
                "AIMESH_OPENAI_API_KEY": None,
                "AIMESH_REDIS_URL": self.redis.url,
                "AIMESH_READINESS_TIMEOUT_SECONDS": "1",
                # A job of a killed retrieval process is taken over 5 s after its last beat.
                "AIMESH_JOB_LEASE_SECONDS": "5",
                # Small batches: a job's progress moves in steps a kill can fall between.
                "AIMESH_JOB_BATCH_CHUNKS": "8",
                "AIMESH_LOG_LEVEL": "WARNING",
                **addresses,
            },
        )
        mesh.service("retrieval").env.update(
            AIMESH_MILVUS_URI=milvus_uri,
            AIMESH_MILVUS_TIMEOUT_SECONDS="20",
            AIMESH_JOBS_DATABASE_URL=jobs_url,
        )
        mesh.service("llm-router").env["AIMESH_MODELS_FILE"] = str(models)
        for name in REPLICATED:
            original = mesh.service(name)
            port, metrics = self.second[name]
            env = {**original.env, "AIMESH_PORT": str(port), "AIMESH_METRICS_PORT": str(metrics)}
            mesh.services.insert(
                mesh.services.index(original) + 1,
                ServiceProcess(f"{name}-2", list(original.command), env),
            )
        return mesh

    @property
    def url(self) -> str:
        return self.mesh.url

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.mesh.admin_api_key}"}

    def editor(self, tenant: str = "faults") -> dict[str, str]:
        token = make_jwt(self.mesh.jwt_secret, tenant=tenant, roles=["editor"])
        return {"Authorization": f"Bearer {token}"}

    def service(self, name: str) -> ServiceProcess:
        return self.mesh.service(name)

    def metrics_port(self, name: str) -> int:
        """The Prometheus port of a replica (``retrieval`` or ``retrieval-2``, ...)."""
        base = name.removesuffix("-2")
        if name != base:
            return self.second[base][1]
        return int(getattr(self.ports, base.replace("-", "_") + "_metrics"))

    def kill(self, name: str) -> None:
        """SIGKILL one service's process group (no goodbye to its clients)."""
        process = self.service(name).process
        assert process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self, name: str) -> None:
        service = self.service(name)
        replacement = replace(service, process=None, _pump=None)
        self.mesh.services[self.mesh.services.index(service)] = replacement
        replacement.start(self.mesh.log_dir)

    def pid(self, name: str) -> int:
        process = self.service(name).process
        assert process is not None
        return process.pid

    def start(self) -> None:
        started = self._started
        self.redis.start()
        started.callback(self.redis.stop)
        self.upstream.start()
        started.callback(self.upstream.stop)
        try:
            milvus = started.enter_context(run_milvus_server(self.root / "milvus", time_tick_ms=50))
        except MilvusServerMissing as missing:
            pytest.skip(str(missing))
        except MilvusServerFailed as failed:
            pytest.fail(f"milvus-server did not start: {failed}")
        database = f"aimesh_faults_jobs_{uuid.uuid4().hex[:12]}"
        _postgres(f'CREATE DATABASE "{database}"')
        started.callback(_postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        jobs_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
        models = models_file(self.root / "models.yaml", self.upstream.server.base_url)
        self._mesh = self._build(milvus.uri, jobs_url, models)
        started.callback(self._mesh.stop)
        self._mesh.start(timeout=300)

    def stop(self) -> None:
        self._started.close()


@pytest.fixture(scope="module")
def fault_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultMesh]:
    mesh = FaultMesh(tmp_path_factory.mktemp("faults"))
    try:
        mesh.start()
        yield mesh
    finally:
        mesh.stop()


def wait_until(
    check: str,
    probe: httpx.Client,
    method: str,
    path: str,
    body: Callable[[], dict[str, object]] | None = None,
) -> float:
    """Seconds until ``method path`` answers 2xx (a recovery), failing after 120 s; ``body``
    makes a new JSON body for each try."""
    started = time.monotonic()
    last = None
    while time.monotonic() - started < 120:
        try:
            last = probe.request(method, path, json=body() if body else None)
            if last.status_code < 300:
                return time.monotonic() - started
            assert last.status_code < 500 or last.status_code in (502, 503, 504), last.text
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{check}: no recovery within 120 s (last: {last and last.text})")


__all__ = ["BIN", "FaultMesh", "say", "wait_until"]
