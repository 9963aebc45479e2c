"""The Kubernetes base as a cluster would get it: rendered by kustomize, schema-valid, and
built to the rules every aimesh Deployment follows (probes, limits, non-root, read-only)."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.k8s_validate import render

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "k8s" / "base"
SCRIPT = ROOT / "scripts" / "k8s_validate.py"
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())
GATEWAY = "gateway"
GRPC_SERVICES = [name for name in SERVICES if name != GATEWAY]
# The web front end (web/Dockerfile: nginx with the built Vue app) is deployed like a service.
WEB = "web"
# The local model server (services/llm-router/model-server: HTTP, OpenAI protocol).
MODEL_SERVER = "model-server"
WORKLOADS = sorted([*SERVICES, WEB, MODEL_SERVER])
WEB_DIR = ROOT / "web"
MODEL_SERVER_DOCKERFILE = ROOT / "services" / "llm-router" / "model-server" / "Dockerfile"


def dockerfile_of(name: str) -> Path:
    """The Dockerfile skaffold builds for ``name`` (the embedding image is the onnx one)."""
    if name == MODEL_SERVER:
        return MODEL_SERVER_DOCKERFILE
    if name == "embedding":
        return ROOT / "services" / "embedding" / "Dockerfile.onnx"
    return WEB_DIR / "Dockerfile" if name == WEB else ROOT / "services" / name / "Dockerfile"


pytestmark = pytest.mark.skipif(
    shutil.which("kustomize") is None and shutil.which("kubectl") is None,
    reason="needs `kustomize` or `kubectl` on PATH to render k8s/base",
)

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    return render(BASE)


def of_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def generated(objects: list[Obj], kind: str, name: str) -> Obj:
    """A generator's object: its name carries a content-hash suffix."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"expected one {kind} {name}-<hash>, got {len(found)}"
    return found[0]


def only_container(deployment: Obj) -> Obj:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def ports_by_name(container: Obj) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def env_values(container: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        check=False,
    )


# The validation script


def test_validate_script_accepts_the_base() -> None:
    result = run_script()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok:" in result.stdout
    assert "k8s/base" in result.stdout


@pytest.fixture
def base_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "base"
    shutil.copytree(BASE, copy)
    return copy


def test_validate_script_names_an_unknown_field(base_copy: Path) -> None:
    deployment = base_copy / "gateway" / "deployment.yaml"
    text = deployment.read_text()
    # A typo a reviewer might miss: `replica` instead of `replicas`.
    deployment.write_text(text.replace("  replicas: 1\n", "  replicas: 1\n  replica: 2\n", 1))
    result = run_script(str(base_copy))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "deployment/gateway" in result.stderr
    assert "replica" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_script_names_a_wrong_type(base_copy: Path) -> None:
    service = base_copy / "embedding" / "service.yaml"
    service.write_text(service.read_text().replace("port: 50051", "port: fifty", 1))
    result = run_script(str(base_copy))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "service/embedding" in result.stderr
    assert "spec.ports.0.port" in result.stderr


def test_validate_script_reports_a_render_failure(base_copy: Path) -> None:
    (base_copy / "retrieval" / "service.yaml").unlink()
    result = run_script(str(base_copy))
    assert result.returncode == 2
    assert "kustomize failed" in result.stderr
    assert "service.yaml" in result.stderr
    assert "Traceback" not in result.stderr


# One name everywhere


def test_one_folder_deployment_and_service_per_service(objects: list[Obj]) -> None:
    folders = sorted(p.name for p in BASE.iterdir() if p.is_dir())
    assert folders == WORKLOADS
    assert sorted(of_kind(objects, "Deployment")) == WORKLOADS
    assert sorted(of_kind(objects, "Service")) == WORKLOADS


@pytest.mark.parametrize("name", WORKLOADS)
def test_objects_in_a_folder_are_named_after_it(name: str) -> None:
    for path in sorted((BASE / name).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                assert doc["metadata"]["name"] == name, path
                assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == name, path


def test_images_are_named_after_the_service(objects: list[Obj]) -> None:
    for name, deployment in of_kind(objects, "Deployment").items():
        container = only_container(deployment)
        assert container["name"] == name
        image = container["image"]
        assert re.fullmatch(rf"aimesh-{name}:[\w.-]+", image), image
        assert dockerfile_of(name).is_file()


def test_every_object_is_part_of_aimesh(objects: list[Obj]) -> None:
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "aimesh", obj["kind"]
    for deployment in of_kind(objects, "Deployment").values():
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["app.kubernetes.io/part-of"] == "aimesh"


# What every Deployment must have


@pytest.mark.parametrize("name", WORKLOADS)
def test_deployment_is_hardened(objects: list[Obj], name: str) -> None:
    deployment = of_kind(objects, "Deployment")[name]
    pod = deployment["spec"]["template"]["spec"]
    container = only_container(deployment)
    pod_sc = pod.get("securityContext", {})
    sc = {**pod_sc, **container.get("securityContext", {})}

    assert pod["automountServiceAccountToken"] is False
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert "privileged" not in sc or sc["privileged"] is False

    # A read-only root needs a writable /tmp.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("name", WORKLOADS)
def test_deployment_has_probes_and_resources(objects: list[Obj], name: str) -> None:
    container = only_container(of_kind(objects, "Deployment")[name])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probe in container, f"{name} has no {probe}"
    resources = container["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) >= {"cpu", "memory"}, f"{name} {bound}"


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_grpc_deployment_probes_its_grpc_port(objects: list[Obj], name: str) -> None:
    deployment = of_kind(objects, "Deployment")[name]
    container = only_container(deployment)
    ports = ports_by_name(container)
    assert set(ports) == {"grpc", "metrics"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
    env = env_values(container)
    assert env["AIMESH_PORT"] == str(ports["grpc"])
    assert env["AIMESH_METRICS_PORT"] == str(ports["metrics"])
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports["metrics"])


def settings_class(name: str) -> Any:
    """The service's pydantic Settings class (config.py, or core/config.py in the gateway)."""
    package = f"aimesh_{name.replace('-', '_')}"
    for module in (f"{package}.config", f"{package}.core.config"):
        try:
            return importlib.import_module(module).Settings
        except ModuleNotFoundError:
            continue
    pytest.fail(f"no Settings class in {package}.config or {package}.core.config")


@pytest.mark.parametrize("name", SERVICES)
def test_ports_are_the_services_defaults(objects: list[Obj], name: str) -> None:
    """Kubernetes and the code agree: the Deployment's ports are the settings' defaults."""
    fields = settings_class(name).model_fields
    ports = ports_by_name(only_container(of_kind(objects, "Deployment")[name]))
    if name == GATEWAY:
        assert ports["http"] == fields["port"].default
    else:
        assert ports["grpc"] == fields["port"].default
        assert ports["metrics"] == fields["metrics_port"].default


def test_gateway_probes_health_and_readiness_over_http(objects: list[Obj]) -> None:
    deployment = of_kind(objects, "Deployment")[GATEWAY]
    container = only_container(deployment)
    assert ports_by_name(container) == {"http": 8000}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8000"


def test_embedding_gets_the_largest_resources(objects: list[Obj]) -> None:
    deployments = of_kind(objects, "Deployment")
    resources = only_container(deployments["embedding"])["resources"]
    assert resources["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert resources["limits"] == {"cpu": "2", "memory": "2Gi"}


def test_retrieval_keeps_its_data_on_a_volume(objects: list[Obj]) -> None:
    deployment = of_kind(objects, "Deployment")["retrieval"]
    container = only_container(deployment)
    assert env_values(container)["AIMESH_DATA_DIR"] == "/data"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "/data" in mounts
    assert mounts["/data"] in volumes
    # Milvus Lite locks its file: a rolling update would start a second pod on it.
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert deployment["spec"]["replicas"] == 1


# Services, config and secrets


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_grpc_services_are_headless_and_match_the_pods(objects: list[Obj], name: str) -> None:
    service = of_kind(objects, "Service")[name]
    deployment = of_kind(objects, "Deployment")[name]
    assert service["spec"]["clusterIP"] == "None"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    service_ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert service_ports["grpc"] == ports_by_name(only_container(deployment))["grpc"]


def test_gateway_service_is_a_regular_cluster_ip(objects: list[Obj]) -> None:
    service = of_kind(objects, "Service")[GATEWAY]
    assert service["spec"].get("clusterIP") != "None"
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http", 8000)]


def test_config_points_every_caller_at_the_services(objects: list[Obj]) -> None:
    config = generated(objects, "ConfigMap", "aimesh-config")
    data = config["data"]
    assert data["AIMESH_LOG_FORMAT"] == "json"
    services = of_kind(objects, "Service")
    for name in GRPC_SERVICES:
        port = {p["name"]: p["port"] for p in services[name]["spec"]["ports"]}["grpc"]
        assert data[f"{name.upper().replace('-', '_')}_SERVICE_ADDR"] == f"{name}:{port}"
    for name, deployment in of_kind(objects, "Deployment").items():
        if name == WEB:  # nginx reads no aimesh setting
            assert "envFrom" not in only_container(deployment)
            continue
        sources = [s["configMapRef"]["name"] for s in only_container(deployment)["envFrom"]]
        assert sources == [config["metadata"]["name"]]


def test_secrets_are_referenced_optionally_and_never_committed(objects: list[Obj]) -> None:
    secret = generated(objects, "Secret", "aimesh-secrets")
    assert not secret.get("data"), "k8s/base must not carry secret values"
    referenced: dict[str, set[str]] = {}
    for name, deployment in of_kind(objects, "Deployment").items():
        container = only_container(deployment)
        assert not any("secretRef" in s for s in container.get("envFrom", [])), name
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == secret["metadata"]["name"]
                assert ref["key"] == entry["name"]
                assert ref["optional"] is True
                referenced.setdefault(name, set()).add(ref["key"])
    assert referenced == {
        "gateway": {"AIMESH_ADMIN_API_KEY", "AIMESH_JWT_SECRET", "AIMESH_JWT_PREVIOUS_SECRET"},
        "llm-router": {"OPENAI_API_KEY"},
    }
    placeholder = (BASE / "secrets.placeholder.env").read_text()
    assert "PLACEHOLDER" in placeholder
    for key in ("AIMESH_ADMIN_API_KEY", "AIMESH_JWT_SECRET", "OPENAI_API_KEY"):
        assert f"# {key}=" in placeholder
    assert "AIMESH_JWT_PREVIOUS_SECRET" in placeholder


# skaffold


def test_skaffold_builds_every_service_and_deploys_the_base(objects: list[Obj]) -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    assert config["apiVersion"].startswith("skaffold/v4")
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert sorted(artifacts) == [f"aimesh-{name}" for name in WORKLOADS]
    for name in WORKLOADS:
        artifact = artifacts[f"aimesh-{name}"]
        assert artifact["context"] == "."
        dockerfile = artifact["docker"]["dockerfile"]
        assert ROOT / dockerfile == dockerfile_of(name)
        assert (ROOT / dockerfile).is_file()
    assert config["manifests"]["kustomize"]["paths"] == ["k8s/base"]
    forwards = [(f["resourceType"], f["resourceName"], f["port"]) for f in config["portForward"]]
    assert ("service", GATEWAY, 8000) in forwards
    assert ("service", WEB, 8080) in forwards
    # skaffold swaps in its images by name: the manifests must use the same names.
    images = {
        only_container(d)["image"].split(":")[0] for d in of_kind(objects, "Deployment").values()
    }
    assert images == set(artifacts)


# The web front end


def nginx_listen_port() -> int:
    match = re.search(r"^\s*listen\s+(\d+);", (WEB_DIR / "nginx.conf").read_text(), re.M)
    assert match, "web/nginx.conf has no listen directive"
    return int(match.group(1))


def test_web_serves_and_probes_its_nginx_port(objects: list[Obj]) -> None:
    deployment = of_kind(objects, "Deployment")[WEB]
    container = only_container(deployment)
    assert ports_by_name(container) == {"http": nginx_listen_port()}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    assert "/healthz" in (WEB_DIR / "nginx.conf").read_text()
    service = of_kind(objects, "Service")[WEB]
    assert service["spec"].get("clusterIP") != "None"
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", nginx_listen_port(), "http")
    ]
    # nginx writes its pid and temp files under /tmp, the only writable path.
    conf = (WEB_DIR / "nginx.conf").read_text()
    assert "pid /tmp/nginx.pid;" in conf
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert re.search(rf"^\s*{temp}_temp_path /tmp/", conf, re.M), temp


def test_web_proxies_to_the_gateway_service(objects: list[Obj]) -> None:
    conf = (WEB_DIR / "nginx.conf").read_text()
    gateway = of_kind(objects, "Service")[GATEWAY]
    port = {p["name"]: p["port"] for p in gateway["spec"]["ports"]}["http"]
    assert f"server {GATEWAY}:{port};" in conf
    assert "proxy_buffering off;" in conf  # server-sent events stream through
