"""Run compose.yaml with podman alone, where no `docker compose` or `podman compose` is.

The file is parsed (its ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}``
interpolation, YAML anchors and merge keys) and each service becomes a podman container
with the same image, user, read-only root, tmpfs, dropped capabilities, environment,
volumes, stop grace and health check. All of them share one pod: one network namespace in
which every service name resolves to 127.0.0.1 (as compose's network resolves it to the
service), so ``embedding:50051`` works unchanged; the pod publishes the ports the caller
asks for on 127.0.0.1. Services start in ``depends_on`` order; ``service_healthy`` waits
for the health check (run with ``podman healthcheck run``).

Used by tests/images (make test-images) and scripts/images/bench.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$\$")


class ComposeError(RuntimeError):
    """compose.yaml cannot be run as asked (a missing variable, a failed start)."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation over every string in ``value``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = env.get(name)
        if op in (":-", "-"):
            unset = current is None or (op == ":-" and current == "")
            return arg if unset else str(current)
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise ComposeError(f"{name}: {arg or 'must be set'}")
            return current
        return current or ""

    return _VAR.sub(one, value)


def load(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """compose.yaml with anchors resolved and variables interpolated."""
    data = yaml.safe_load(path.read_text())
    data = {k: v for k, v in data.items() if not str(k).startswith("x-")}
    result = interpolate(data, env)
    assert isinstance(result, dict)
    return result


def start_order(services: Mapping[str, Any]) -> list[str]:
    """Services ordered so that each comes after what it depends on."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise ComposeError(f"depends_on cycle: {' -> '.join((*path, name))}")
        for dep in services[name].get("depends_on") or {}:
            if dep in services:  # a subset (``only``) may leave a dependency out
                visit(dep, (*path, name))
        order.append(name)

    for name in services:
        visit(name, ())
    return order


def _duration(text: str | int | float | None, default: float) -> float:
    if text is None:
        return default
    if isinstance(text, int | float):
        return float(text)
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def _run(cmd: list[str], check: bool = True, timeout: float | None = 120) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise ComposeError(
            f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {proc.stderr[-2000:]}"
        )
    return proc.stdout.strip()


@dataclass
class PodmanMesh:
    """compose.yaml's services in one podman pod; use as a context manager."""

    env: Mapping[str, str]
    # Container port -> host port published on 127.0.0.1 (the caller picks free ones).
    publish: Mapping[int, int] = field(default_factory=dict)
    only: list[str] | None = None
    name: str = field(default_factory=lambda: f"aimesh-test-{uuid.uuid4().hex[:8]}")
    services: dict[str, Any] = field(init=False, default_factory=dict)
    volumes: list[str] = field(init=False, default_factory=list)
    started: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        spec = load(self.env)
        self.services = spec["services"]
        if self.only is not None:
            self.services = {k: v for k, v in self.services.items() if k in self.only}

    def container(self, service: str) -> str:
        return f"{self.name}-{service}"

    def create_pod(self) -> None:
        cmd = ["podman", "pod", "create", "--name", self.name]
        for service in self.services:
            cmd += ["--add-host", f"{service}:127.0.0.1"]
        publish = dict(self.publish)
        # compose's own `ports` ("127.0.0.1:HOST:CONTAINER"), unless the caller moved them.
        for spec in self.services.values():
            for entry in spec.get("ports") or []:
                parts = str(entry).split(":")
                container_port = int(parts[-1])
                if container_port not in publish and len(parts) >= 2 and parts[-2]:
                    publish[container_port] = int(parts[-2])
        for container_port, host_port in publish.items():
            cmd += ["-p", f"127.0.0.1:{host_port}:{container_port}"]
        _run(cmd)

    def run_args(self, service: str) -> list[str]:
        spec = self.services[service]
        cmd = ["podman", "run", "-d", "--pod", self.name, "--name", self.container(service)]
        if spec.get("user"):
            cmd += ["--user", str(spec["user"])]
        if spec.get("read_only"):
            cmd += ["--read-only", "--read-only-tmpfs=false"]
        for path in spec.get("tmpfs") or []:
            cmd += ["--tmpfs", f"{path}:rw,nosuid,nodev,mode=1777"]
        for cap in spec.get("cap_drop") or []:
            cmd += ["--cap-drop", cap]
        for opt in spec.get("security_opt") or []:
            cmd += ["--security-opt", opt.replace("no-new-privileges:true", "no-new-privileges")]
        grace = _duration(spec.get("stop_grace_period"), 10)
        cmd += ["--stop-timeout", str(int(grace))]
        for key, value in (spec.get("environment") or {}).items():
            cmd += ["-e", f"{key}={'' if value is None else value}"]
        for volume in spec.get("volumes") or []:
            source, _, target = str(volume).partition(":")
            if not source.startswith(("/", ".")):
                source = f"{self.name}-{source}"
                if source not in self.volumes:
                    _run(["podman", "volume", "create", source])
                    self.volumes.append(source)
            cmd += ["-v", f"{source}:{target}"]
        check = spec.get("healthcheck") or {}
        test = check.get("test")
        if test and test[0] in ("CMD", "CMD-SHELL"):
            import json

            cmd += ["--health-cmd", json.dumps(test[1:]) if test[0] == "CMD" else test[1]]
            cmd += ["--health-interval", "disable"]  # no systemd timers here: run on demand
            cmd += ["--health-timeout", check.get("timeout", "5s")]
        cmd.append(spec["image"])
        return cmd

    def healthy(self, service: str) -> bool:
        """The compose health check, run once now (true when the service has none)."""
        if not (self.services[service].get("healthcheck") or {}).get("test"):
            return self.state(service) == "running"
        proc = subprocess.run(
            ["podman", "healthcheck", "run", self.container(service)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return proc.returncode == 0

    def state(self, service: str) -> str:
        return _run(
            ["podman", "inspect", "-f", "{{.State.Status}}", self.container(service)], check=False
        )

    def wait_healthy(self, service: str, timeout: float | None = None) -> float:
        """Seconds until the health check passed; raises with the log tail when it never does."""
        spec = self.services[service].get("healthcheck") or {}
        limit = timeout or _duration(spec.get("start_period"), 60) + 60
        start = time.monotonic()
        while time.monotonic() - start < limit:
            if self.healthy(service):
                return time.monotonic() - start
            if self.state(service) in ("exited", "stopped"):
                break
            time.sleep(0.5)
        raise ComposeError(f"{service} did not become healthy:\n{self.logs(service)[-3000:]}")

    def logs(self, service: str) -> str:
        proc = subprocess.run(
            ["podman", "logs", self.container(service)], capture_output=True, text=True, check=False
        )
        return proc.stdout + proc.stderr

    def start_service(self, service: str) -> None:
        _run(self.run_args(service))
        self.started.append(service)

    def up(self) -> None:
        self.create_pod()
        _run(["podman", "pod", "start", self.name])
        for service in start_order(self.services):
            for dep, cond in (self.services[service].get("depends_on") or {}).items():
                if dep in self.services and (cond or {}).get("condition") == "service_healthy":
                    self.wait_healthy(dep)
            self.start_service(service)

    def down(self) -> None:
        subprocess.run(
            ["podman", "pod", "rm", "-f", "-t", "5", self.name], capture_output=True, check=False
        )
        for volume in self.volumes:
            subprocess.run(
                ["podman", "volume", "rm", "-f", volume], capture_output=True, check=False
            )

    def __enter__(self) -> PodmanMesh:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def engine_ready() -> str | None:
    """Why podman cannot run the mesh here, or None when it can."""
    if not any(
        os.access(os.path.join(d, "podman"), os.X_OK) for d in os.environ.get("PATH", "").split(":")
    ):
        return "podman is not installed (scripts/images/prepare_podman.sh installs it)"
    proc = subprocess.run(["podman", "info"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return f"podman info failed: {proc.stderr.strip()[-300:]}"
    return None
