"""The fault suite's mesh: the four services as real processes (two replicas of embedding
and of llm-router behind round-robin channels), a private redis-server, on free ports.

Built on ``scripts.devmesh.Mesh`` (the launcher of ``make run``) with the second replicas
added as more :class:`ServiceProcess` entries, so stopping the mesh stops everything the
suite started. Retrieval runs once: its embedded Milvus Lite is one process's file (two
replicas need a Milvus server, as in k8s).
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from scripts.devmesh import BIN, Mesh, Ports, ServiceProcess, free_port
from tests.conftest import PrivateRedis, make_jwt

REPLICATED = ("embedding", "llm-router")
ADDR_ENV = {"embedding": "EMBEDDING_SERVICE_ADDR", "llm-router": "LLM_ROUTER_SERVICE_ADDR"}


def say(check: str, message: str) -> None:
    """What a check tried or saw, printed (``make test-faults`` runs pytest with -s)."""
    print(f"[faults] {check}: {message}", flush=True)


class FaultMesh:
    """A running :class:`Mesh` plus its second replicas and its private Redis."""

    def __init__(self, root: Path) -> None:
        self.redis = PrivateRedis()
        ports = Ports.free()
        self.second = {name: (free_port(), free_port()) for name in REPLICATED}
        first = {"embedding": ports.embedding, "llm-router": ports.llm_router}
        addresses = {
            ADDR_ENV[name]: f"ipv4:127.0.0.1:{first[name]},127.0.0.1:{self.second[name][0]}"
            for name in REPLICATED
        }
        self.mesh = Mesh(
            root / "data",
            ports=ports,
            log_dir=root / "logs",
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
        for name in REPLICATED:
            original = self.mesh.service(name)
            port, metrics = self.second[name]
            env = {**original.env, "AIMESH_PORT": str(port), "AIMESH_METRICS_PORT": str(metrics)}
            self.mesh.services.insert(
                self.mesh.services.index(original) + 1,
                ServiceProcess(f"{name}-2", list(original.command), env),
            )

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

    def kill(self, name: str) -> None:
        """SIGKILL one service's process group (no goodbye to its clients)."""
        process = self.service(name).process
        assert process is not None
        with contextlib.suppress(ProcessLookupError):
            import os

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
        self.redis.start()
        self.mesh.start(timeout=300)

    def stop(self) -> None:
        self.mesh.stop()
        self.redis.stop()


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
