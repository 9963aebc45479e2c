"""The built images, run as a whole mesh from compose.yaml (``make test-images``).

Started with podman through scripts/images/podman_mesh.py (compose.yaml parsed, one pod)
and driven from outside: upload, job, search, ask with a citation, a streamed chat
completion, embeddings, the web page. Each container is checked for what Kubernetes
relies on: non-root, read-only root filesystem, the manifests' probes answering, SIGTERM
stopping it within its grace period without failing a request in flight, and every
environment variable and port the rendered overlays set being accepted by the settings
class inside the image.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.images.podman_mesh import PodmanMesh, engine_ready, load
from tests.conftest import free_port

pytestmark = [pytest.mark.images, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TAG = os.environ.get("AIMESH_TAG", "latest")
SERVICES = ["embedding", "retrieval", "model-server", "llm-router", "gateway", "web"]
# Every container port the manifests name (services and metrics).
CONTAINER_PORTS = [8000, 8080, 8090, 50051, 50052, 50053, 9101, 9102, 9103]
# The settings class of each Python image, as the image itself imports it.
SETTINGS = {
    "embedding": "aimesh_embedding.config:Settings",
    "retrieval": "aimesh_retrieval.config:Settings",
    "llm-router": "aimesh_llm_router.config:Settings",
    "gateway": "aimesh_gateway.core.config:Settings",
    "model-server": "aimesh_model_server.config:Settings",
}
# Read by a library in the image, not by the service's settings.
RUNTIME_ENV = {"OMP_NUM_THREADS"}
GRACE = 30.0
RACE = 1.0

DOC = (
    "The Harbor Lighthouse was built in 1874 on the northern breakwater of Port Ellery. "
    "Its lamp is visible for 18 nautical miles. The keeper's cottage became a museum in 1962."
)


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("AIMESH_IMAGES_REQUIRED"):
        pytest.fail(reason)
    pytest.skip(reason)


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}: {proc.stderr[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def mesh() -> Iterator[PodmanMesh]:
    reason = engine_ready()
    if reason:
        _skip_or_fail(reason)
    missing = [
        s
        for s in SERVICES
        if podman("image", "exists", f"aimesh-{s}:{TAG}", check=False).returncode
    ]
    if missing:
        _skip_or_fail(f"images not built (make images): {missing}")
    ports = {port: free_port() for port in CONTAINER_PORTS}
    env = {
        "AIMESH_TAG": TAG,
        "AIMESH_ADMIN_API_KEY": "am_test_" + secrets.token_urlsafe(24),
        "AIMESH_JWT_SECRET": secrets.token_urlsafe(32),
        "AIMESH_GATEWAY_PORT": str(ports[8000]),
        "AIMESH_WEB_PORT": str(ports[8080]),
    }
    with PodmanMesh(env=env, publish=ports) as running:
        for service in SERVICES:
            running.wait_healthy(service, timeout=240)
        running.ports = ports  # type: ignore[attr-defined]
        yield running


def port(mesh: PodmanMesh, container_port: int) -> int:
    return int(mesh.ports[container_port])  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def api(mesh: PodmanMesh) -> Iterator[httpx.Client]:
    key = mesh.env["AIMESH_ADMIN_API_KEY"]
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port(mesh, 8000)}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    ) as client:
        yield client


def grpc_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


# The mesh, driven from outside


@pytest.fixture(scope="module")
def uploaded(api: httpx.Client) -> dict[str, Any]:
    files = {"files": ("lighthouse.txt", DOC.encode(), "text/plain")}
    accepted = api.post("/v1/collections/harbor/files", files=files)
    assert accepted.status_code == 202, accepted.text
    job_url = accepted.json()["status_url"]
    deadline = time.monotonic() + 120
    while True:
        job = api.get(job_url).json()
        if job["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert job["state"] == "succeeded", job
    return dict(job)


def test_upload_search_and_ask_with_a_citation(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    found = api.post(
        "/v1/collections/harbor/search", json={"query": "When was the lighthouse built?"}
    )
    assert found.status_code == 200, found.text
    hits = found.json()["results"]
    assert hits
    assert "1874" in hits[0]["text"]

    asked = api.post(
        "/v1/ask",
        json={"question": "When was the Harbor Lighthouse built?", "collection": "harbor"},
    )
    assert asked.status_code == 200, asked.text
    answer = asked.json()
    assert answer["citations"], answer
    for cited in answer["citations"]:
        assert cited["text"] in DOC
        assert cited["chunk_id"].startswith(cited["document_id"] + "#")
    assert any(f"[{c['source']}]" in answer["answer"] for c in answer["citations"]), answer


def test_streamed_chat_completion(api: httpx.Client) -> None:
    body = {
        "model": "default",
        "stream": True,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    }
    chunks: list[dict[str, Any]] = []
    done = False
    with api.stream("POST", "/v1/chat/completions", json=body) as reply:
        assert reply.status_code == 200, reply.read()
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            chunks.append(json.loads(line[6:]))
    assert done
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()


def test_embeddings(api: httpx.Client) -> None:
    reply = api.post(
        "/v1/embeddings",
        json={"model": "all-MiniLM-L6-v2", "input": ["a lighthouse", "a harbour light"]},
    )
    assert reply.status_code == 200, reply.text
    data = reply.json()["data"]
    assert [d["index"] for d in data] == [0, 1]
    assert len(data[0]["embedding"]) == 384
    a, b = (d["embedding"] for d in data)
    assert 0.3 < sum(x * y for x, y in zip(a, b, strict=True)) < 0.999


def test_web_page_is_served_and_proxies_the_api(mesh: PodmanMesh) -> None:
    base = f"http://127.0.0.1:{port(mesh, 8080)}"
    page = httpx.get(base + "/", timeout=10)
    assert page.status_code == 200
    assert '<div id="app"' in page.text
    assert "script" in page.text
    proxied = httpx.get(
        base + "/v1/models",
        headers={"Authorization": f"Bearer {mesh.env['AIMESH_ADMIN_API_KEY']}"},
        timeout=10,
    )
    assert proxied.status_code == 200, proxied.text
    assert proxied.json()["data"]


# Each container, as Kubernetes runs it


@pytest.mark.parametrize("service", SERVICES)
def test_non_root_on_a_read_only_root(mesh: PodmanMesh, service: str) -> None:
    image_user = podman(
        "image", "inspect", "-f", "{{.Config.User}}", f"aimesh-{service}:{TAG}"
    ).stdout.strip()
    assert image_user == "10001:10001", "the image itself must not default to root"
    name = mesh.container(service)
    assert podman("inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", name).stdout.strip() == "true"
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    wrote = podman("exec", name, "touch", "/probe-write", check=False)
    assert wrote.returncode != 0
    assert "Read-only file system" in wrote.stderr, wrote
    # /tmp (an emptyDir in Kubernetes) is the only scratch space.
    assert podman("exec", name, "touch", "/tmp/probe-write", check=False).returncode == 0


def _rendered(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _aimesh_containers(
    docs: list[dict[str, Any]],
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(service, container, pod spec) of every aimesh container in the rendered docs."""
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"]:
            image = container["image"].rsplit("/", 1)[-1].split(":")[0]
            if image.startswith("aimesh-"):
                yield image.removeprefix("aimesh-"), container, pod


@pytest.fixture(scope="module")
def base_manifests() -> list[dict[str, Any]]:
    return _rendered("base")


@pytest.mark.parametrize("service", SERVICES)
def test_the_manifests_probes_answer_and_compose_checks_the_same(
    mesh: PodmanMesh, base_manifests: list[dict[str, Any]], service: str
) -> None:
    containers = {name: (c, pod) for name, c, pod in _aimesh_containers(base_manifests)}
    container, pod = containers[service]
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    compose_check = " ".join(
        (load(mesh.env)["services"][service].get("healthcheck") or {}).get("test") or []
    )
    probes = [
        container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in container
    ]
    assert probes, f"{service} has no probe in k8s/base"
    for probe in probes:
        if "grpc" in probe:
            target = probe["grpc"]["port"]
            assert grpc_serving(f"127.0.0.1:{port(mesh, target)}"), (service, probe)
            assert f"127.0.0.1:{target}" in compose_check
        else:
            get = probe["httpGet"]
            target = named.get(get["port"], get["port"])
            reply = httpx.get(
                f"http://127.0.0.1:{port(mesh, int(target))}{get['path']}", timeout=10
            )
            assert reply.status_code == 200, (service, probe, reply.text)
            if compose_check:  # web (nginx) has no compose health check: no python in it
                assert f"{target}" in compose_check
    assert pod.get("terminationGracePeriodSeconds", 30) >= GRACE


# Settings and ports: what the overlays set is what the images accept

PROBE_SETTINGS = r"""
import importlib, json, os, sys
module, _, cls = sys.argv[1].partition(":")
Settings = getattr(importlib.import_module(module), cls)
prefix = Settings.model_config.get("env_prefix", "")
names = set()
for field_name, info in Settings.model_fields.items():
    alias = info.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        names.update(c for c in choices if isinstance(c, str))
    elif isinstance(alias, str):
        names.add(alias)
    else:
        names.add(prefix + field_name)
error = None
try:
    Settings()
except Exception as exc:  # a value the overlay sets that the settings refuse
    error = str(exc)
print(json.dumps({"accepted": sorted(n.upper() for n in names), "error": error}))
"""


def image_settings(service: str, env: dict[str, str]) -> dict[str, Any]:
    """The accepted variable names of the settings class in the image, and whether ``env``
    passes its validation there."""
    args = ["run", "--rm", "--network", "none", "--entrypoint", "/opt/venv/bin/python"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    args += [f"aimesh-{service}:{TAG}", "-c", PROBE_SETTINGS, SETTINGS[service]]
    result = json.loads(podman(*args).stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def unknown_variables(names: set[str], accepted: set[str]) -> set[str]:
    return {n for n in names if n.upper() not in accepted and n not in RUNTIME_ENV}


@pytest.fixture(scope="module")
def exposed() -> dict[str, set[int]]:
    ports: dict[str, set[int]] = {}
    for service in SERVICES:
        raw = podman(
            "image", "inspect", "-f", "{{json .Config.ExposedPorts}}", f"aimesh-{service}:{TAG}"
        ).stdout
        ports[service] = {int(p.split("/")[0]) for p in (json.loads(raw) or {})}
    return ports


@pytest.mark.parametrize("overlay", ["base", "overlays/dev", "overlays/prod"])
def test_every_variable_and_port_the_overlay_sets_is_accepted_by_the_image(
    mesh: PodmanMesh, overlay: str, exposed: dict[str, set[int]]
) -> None:
    docs = _rendered(overlay)
    config_maps = {
        d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"
    }
    shared_keys: dict[str, set[str]] = {}  # ConfigMap key -> services that load it
    for service, container, _pod in _aimesh_containers(docs):
        container_ports = {p["containerPort"] for p in container.get("ports", [])}
        assert container_ports == exposed[service], (
            overlay,
            service,
            container_ports,
            exposed[service],
        )
        if service not in SETTINGS:
            assert not container.get("env"), (overlay, service)
            continue
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            data = config_maps[source["configMapRef"]["name"]]
            env.update(data)
            for key in data:
                shared_keys.setdefault(key, set()).add(service)
        own = {}
        for item in container.get("env", []):
            # Secrets and field refs get a stand-in value: the name is what is checked.
            own[item["name"]] = str(item.get("value", "stand-in-" + secrets.token_urlsafe(48)))
        env.update(own)
        for key in ("AIMESH_PORT", "AIMESH_METRICS_PORT"):
            if key in own:
                assert int(own[key]) in container_ports, (overlay, service, key)
        result = image_settings(service, env)
        accepted = set(result["accepted"])
        assert not unknown_variables(set(own), accepted), (
            overlay,
            service,
            unknown_variables(set(own), accepted),
        )
        assert result["error"] is None, (overlay, service, result["error"])
        container.setdefault("_accepted", accepted)
    for key, consumers in shared_keys.items():
        accepted_somewhere = any(
            key.upper() in set(c.get("_accepted", ()))
            for _s, c, _p in _aimesh_containers(docs)
            if _s in consumers
        )
        assert accepted_somewhere or key in RUNTIME_ENV, (
            f"{overlay}: ConfigMap key {key} is read by no image"
        )


def test_a_renamed_setting_is_caught(mesh: PodmanMesh) -> None:
    """The cross-check can fail: a variable the settings do not know is reported."""
    accepted = set(image_settings("retrieval", {})["accepted"])
    assert "AIMESH_DATA_DIR" in accepted
    assert unknown_variables({"AIMESH_DATA_DIR", "AIMESH_DATA_DIRECTORY"}, accepted) == {
        "AIMESH_DATA_DIRECTORY"
    }
    refused = image_settings("retrieval", {"AIMESH_PORT": "not-a-port"})
    assert refused["error"]
    assert "port" in refused["error"].lower()


# What the router image prunes (stripped extension modules, phonenumbers' geocoding data,
# no pip or setuptools) leaves its privacy detector whole: libphonenumber, the public-suffix
# list and the regex module import and find what they should, offline and as uid 10001.

DETECT = r"""
import json
from aimesh_llm_router.privacy.detector import load_detector
text = ("Mail ada@example.org or call +44 20 7946 0958; card 4111 1111 1111 1111, "
        "IBAN GB82 WEST 1234 5698 7654 32, from 192.0.2.44.")
print(json.dumps(sorted(f.entity for f in load_detector().find(text))))
"""


def test_the_router_images_privacy_detector_finds_personal_data() -> None:
    if podman("image", "exists", f"aimesh-llm-router:{TAG}", check=False).returncode:
        _skip_or_fail("aimesh-llm-router is not built (make images)")
    args = ["run", "--rm", "--network", "none", "--read-only", "--user", "10001:10001"]
    args += ["--entrypoint", "/opt/venv/bin/python", f"aimesh-llm-router:{TAG}", "-c", DETECT]
    found = json.loads(podman(*args).stdout.strip().splitlines()[-1])
    assert found == sorted(["EMAIL", "PHONE", "CARD", "IBAN", "IP_ADDRESS"]), found


# SIGTERM: stops within the grace period, requests in flight complete


def _send_for(mesh: PodmanMesh, service: str) -> Any:
    key = mesh.env["AIMESH_ADMIN_API_KEY"]
    auth = {"Authorization": f"Bearer {key}"}
    gateway = f"http://127.0.0.1:{port(mesh, 8000)}"
    if service == "web":
        return lambda: httpx.get(
            f"http://127.0.0.1:{port(mesh, 8080)}/", timeout=60
        ).raise_for_status()
    if service == "model-server":
        body = {
            "model": "smollm2-135m-instruct",
            "max_tokens": 24,
            "messages": [{"role": "user", "content": "Count to ten."}],
        }
        return lambda: httpx.post(
            f"http://127.0.0.1:{port(mesh, 8090)}/v1/chat/completions", json=body, timeout=60
        ).raise_for_status()
    if service == "llm-router":
        body = {
            "model": "default",
            "messages": [{"role": "user", "content": "The sea was grey. What colour was it?"}],
        }
        return lambda: httpx.post(
            f"{gateway}/v1/chat/completions", json=body, headers=auth, timeout=60
        ).raise_for_status()
    if service == "retrieval":
        body = {"query": "lamp visible for how many miles?"}
        return lambda: httpx.post(
            f"{gateway}/v1/collections/harbor/search", json=body, headers=auth, timeout=60
        ).raise_for_status()
    body = {"model": "all-MiniLM-L6-v2", "input": [DOC] * 32}
    return lambda: httpx.post(
        f"{gateway}/v1/embeddings", json=body, headers=auth, timeout=60
    ).raise_for_status()


# Dependents first: a stopped service is started again before the next one is stopped.
@pytest.mark.parametrize(
    "service", ["web", "model-server", "llm-router", "retrieval", "embedding", "gateway"]
)
def test_sigterm_stops_within_the_grace_period_without_failing_requests_in_flight(
    mesh: PodmanMesh, uploaded: dict[str, Any], service: str
) -> None:
    send = _send_for(mesh, service)
    send()  # warm: the path works before the signal
    # (began, ended, error) of every request; each worker sends until the signal is out.
    records: list[tuple[float, float, BaseException | None]] = []
    lock = threading.Lock()
    stop_at: list[float] = []

    def worker() -> None:
        while not stop_at:
            began = time.monotonic()
            error: BaseException | None = None
            try:
                send()
            except Exception as exc:
                error = exc
            with lock:
                records.append((began, time.monotonic(), error))

    container = mesh.container(service)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(worker) for _ in range(4)]
        time.sleep(2.0)  # requests are flowing
        stop_at.append(time.monotonic())
        # SIGTERM itself (what the kubelet sends), not the image's STOPSIGNAL.
        podman("kill", "--signal", "TERM", container)
        try:
            exited = subprocess.run(
                ["podman", "wait", container],
                capture_output=True,
                text=True,
                timeout=GRACE,
                check=False,
            )
            exit_code = int(exited.stdout.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            podman("kill", container, check=False)
            exit_code = 137
        seconds = time.monotonic() - stop_at[0]
        for future in futures:
            future.result()
    # Sent well before the signal (RACE seconds: time to reach the container through the
    # gateway on a loaded machine): must all succeed, those still running when it came
    # included. A request sent just as the signal goes out may race a server that has
    # stopped accepting; Kubernetes has the same race until the endpoint is removed.
    before = [r for r in records if r[0] < stop_at[0] - RACE]
    in_flight = [r for r in before if r[1] > stop_at[0]]
    failed = [r[2] for r in before if r[2] is not None]
    try:
        assert seconds < GRACE, f"{service} took {seconds:.1f} s to stop (SIGKILL after {GRACE} s)"
        assert exit_code != 137, f"{service} was killed, not stopped by SIGTERM"
        assert before, "no request was sent before the signal"
        assert not failed, (
            f"{service}: {len(failed)} of {len(before)} requests sent before "
            f"SIGTERM failed ({len(in_flight)} were in flight): {failed[:3]}"
        )
    finally:
        if service != "gateway":
            podman("start", mesh.container(service))
            mesh.wait_healthy(service, timeout=240)
