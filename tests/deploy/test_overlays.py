"""Policy tests over the rendered overlays (k8s/overlays/dev and prod), as a cluster gets them.

Every workload: probes, requests and limits, the Pod Security "restricted" profile, no
service-account token, no `latest` image. Every pod is selected by a NetworkPolicy and the
namespace denies by default. Prod: HPA (or KEDA ScaledObject) and PDB per service, spread
over nodes and zones, and NetworkPolicies that allow exactly the calls the mesh makes.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scripts.k8s_validate import CUSTOM_KINDS, kustomize_command, render, validate

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ROOT / "k8s" / "overlays"
SERVICES = ["embedding", "gateway", "llm-router", "retrieval"]
# The web front end (nginx): deployed like a service, with no metrics port.
WEB = "web"
WEB_PORT = 8080
MODEL_SERVER = "model-server"
MODEL_SERVER_PORT = 8090
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
GRPC_PORTS = {"embedding": 50051, "retrieval": 50052, "llm-router": 50053}
METRICS_PORTS = {"embedding": 9101, "retrieval": 9102, "llm-router": 9103, "gateway": 8000}
METRICS_PORTS["model-server"] = 8090

pytestmark = pytest.mark.skipif(
    shutil.which("kustomize") is None and shutil.which("kubectl") is None,
    reason="needs `kustomize` or `kubectl` on PATH to render the overlays",
)

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: render(OVERLAYS / name) for name in ("dev", "prod")}


def of_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def pod_labels(workload: Obj) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels only, as these manifests use) against pod labels."""
    assert not selector.get("matchExpressions"), "policy tests read matchLabels only"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_every_overlay_is_checked() -> None:
    assert sorted(p.parent.name for p in OVERLAYS.glob("*/kustomization.yaml")) == ["dev", "prod"]


# kubernetes-validate, the command line tool, on each rendered overlay


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_kubernetes_validate_strict_passes(overlay: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    result = subprocess.run(
        kustomize_command(OVERLAYS / overlay), capture_output=True, text=True, check=True
    )
    manifest.write_text(result.stdout)
    tool = Path(sys.executable).parent / "kubernetes-validate"
    for version in ("1.29.0", "1.37.0"):
        checked = subprocess.run(
            [str(tool), "--strict", "--quiet", "-k", version, str(manifest)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        # Warnings only for the custom resources that have no schema, nothing else.
        for line in (checked.stdout + checked.stderr).splitlines():
            if line.startswith("WARN"):
                assert any(
                    f"kind {kind} with api version {api}" in line for api, kind in CUSTOM_KINDS
                )


# Custom resources against k8s/schemas


def test_custom_resource_schemas_are_valid_json_schemas() -> None:
    for path in CUSTOM_KINDS.values():
        jsonschema.Draft7Validator.check_schema(json.loads(path.read_text()))


def test_every_custom_resource_has_a_schema(rendered: dict[str, list[Obj]]) -> None:
    kinds = {
        (o["apiVersion"], o["kind"])
        for objects in rendered.values()
        for o in objects
        if "." in o["apiVersion"].split("/")[0] and not o["apiVersion"].endswith(".k8s.io/v1")
    }
    assert kinds == set(CUSTOM_KINDS)


@pytest.mark.parametrize(
    ("kind", "path", "value", "expected"),
    [
        ("ScaledObject", ["spec", "minReplicaCounts"], 2, "minReplicaCounts"),
        ("ServiceMonitor", ["spec", "endpoints", 0, "intervall"], "15s", "intervall"),
        ("PrometheusRule", ["spec", "groups", 1, "rules", 0, "for"], "five minutes", "for"),
    ],
)
def test_a_broken_custom_resource_is_reported(
    rendered: dict[str, list[Obj]], kind: str, path: list[Any], value: Any, expected: str
) -> None:
    objects = copy.deepcopy(rendered["prod"])
    target: Any = next(o for o in objects if o["kind"] == kind)
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    problems = validate(objects, "prod", ["1.37.0"])
    assert len(problems) == 1, problems
    assert kind.lower() in problems[0].resource
    assert expected in problems[0].message


# Every workload in every overlay


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_workloads_have_probes_requests_limits(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    for workload in workloads(rendered[overlay]):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            where = f"{overlay} {workload['metadata']['name']}/{container['name']}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{where}: no {probe}"
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{where}: {bound}"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_workloads_meet_the_restricted_profile(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    for workload in workloads(rendered[overlay]):
        pod = workload["spec"]["template"]["spec"]
        name = f"{overlay} {workload['metadata']['name']}"
        assert pod.get("automountServiceAccountToken") is False, name
        assert not pod.get("hostNetwork")
        assert not pod.get("hostPID")
        assert not pod.get("hostIPC")
        for volume in pod.get("volumes", []):
            assert "hostPath" not in volume, name
        pod_sc = pod.get("securityContext", {})
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = {**pod_sc, **container.get("securityContext", {})}
            where = f"{name}/{container['name']}"
            assert sc.get("runAsNonRoot") is True, where
            assert sc.get("runAsUser", 1) != 0, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged", False) is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_images_are_pinned(rendered: dict[str, list[Obj]], overlay: str) -> None:
    for workload in workloads(rendered[overlay]):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name, f"{image}: no tag"
            assert "/" not in tag, f"{image}: no tag"
            assert tag != "latest", image
            assert "@sha256:" in image or tag[0].isdigit() or tag.startswith("v"), image


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_namespace_enforces_the_restricted_profile(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    namespaces = of_kind(rendered[overlay], "Namespace")
    assert len(namespaces) == 1
    (namespace,) = namespaces.values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in rendered[overlay]:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace["metadata"]["name"], obj["kind"]


# NetworkPolicies


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_pod_is_selected_by_a_network_policy(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    policies = of_kind(rendered[overlay], "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {}
    assert sorted(deny["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny
    assert "egress" not in deny
    for workload in workloads(rendered[overlay]):
        labels = pod_labels(workload)
        own = [
            name
            for name, policy in policies.items()
            if policy["spec"]["podSelector"] and selects(policy["spec"]["podSelector"], labels)
        ]
        assert own, f"{overlay}: no NetworkPolicy of its own for {workload['metadata']['name']}"


def allowed(
    policies: dict[str, Obj], source: dict[str, str], target: dict[str, str], port: int
) -> bool:
    """Whether the policies let a pod labelled ``source`` open ``port`` on ``target``.

    Both directions must allow it: the source's egress and the target's ingress (same
    namespace; peers with a namespaceSelector do not match these same-namespace pods).
    """

    def peer_matches(peer: Obj, labels: dict[str, str]) -> bool:
        if "namespaceSelector" in peer or "ipBlock" in peer:
            return False
        return selects(peer.get("podSelector", {}), labels)

    def rule_allows(rule: Obj, key: str, labels: dict[str, str]) -> bool:
        ports = [p["port"] for p in rule.get("ports", [])]
        peers = rule.get(key)
        port_ok = not ports or port in ports
        return port_ok and (peers is None or any(peer_matches(p, labels) for p in peers))

    def direction(kind: str, key: str, owner: dict[str, str], other: dict[str, str]) -> bool:
        relevant = [
            p["spec"]
            for p in policies.values()
            if kind in p["spec"].get("policyTypes", []) and selects(p["spec"]["podSelector"], owner)
        ]
        return any(
            rule_allows(rule, key, other)
            for spec in relevant
            for rule in spec.get(kind.lower(), [])
        )

    return direction("Egress", "to", source, target) and direction(
        "Ingress", "from", target, source
    )


def labels_of(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "aimesh"}


EXPECTED_CALLS = {
    ("gateway", "llm-router", 50053),
    ("gateway", "retrieval", 50052),
    ("gateway", "embedding", 50051),
    ("llm-router", "retrieval", 50052),
    ("llm-router", MODEL_SERVER, MODEL_SERVER_PORT),
    ("retrieval", "embedding", 50051),
    ("envoy", "gateway", 8000),
    ("web", "gateway", 8000),
}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_network_policies_allow_exactly_the_mesh_calls(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    policies = of_kind(rendered[overlay], "NetworkPolicy")
    pods = [*SERVICES, "envoy", WEB, MODEL_SERVER]
    for source in pods:
        for target in pods:
            if source == target:
                continue
            for port in {*GRPC_PORTS.values(), 8000, WEB_PORT, MODEL_SERVER_PORT}:
                # The web pod takes HTTP from anyone (it is an edge); only its own egress
                # (to the gateway) limits what it reaches.
                expected = (source, target, port) in EXPECTED_CALLS
                if target == WEB and port == WEB_PORT:
                    continue  # checked below: open ingress, closed egress elsewhere
                got = allowed(policies, labels_of(source), labels_of(target), port)
                assert got == expected, f"{overlay}: {source} -> {target}:{port}"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_web_is_open_on_its_port_and_reaches_only_the_gateway(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    policies = of_kind(rendered[overlay], "NetworkPolicy")
    spec = policies[WEB]["spec"]
    assert spec["ingress"] == [{"ports": [{"port": WEB_PORT, "protocol": "TCP"}]}]
    egress = [
        (peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"], port["port"])
        for rule in spec["egress"]
        for peer in rule["to"]
        for port in rule["ports"]
    ]
    assert egress == [("gateway", 8000)]
    assert allowed(policies, labels_of(WEB), labels_of("gateway"), 8000)
    for target in ("llm-router", "retrieval", "embedding", "redis", "milvus"):
        for port in (*GRPC_PORTS.values(), 6379, 19530):
            assert not allowed(policies, labels_of(WEB), labels_of(target), port)


def test_dev_reaches_its_in_cluster_milvus_and_redis(rendered: dict[str, list[Obj]]) -> None:
    policies = of_kind(rendered["dev"], "NetworkPolicy")
    assert allowed(policies, labels_of("retrieval"), labels_of("milvus"), 19530)
    assert allowed(policies, labels_of("gateway"), labels_of("redis"), 6379)
    assert not allowed(policies, labels_of("gateway"), labels_of("milvus"), 19530)
    assert not allowed(policies, labels_of("embedding"), labels_of("redis"), 6379)
    assert not allowed(policies, labels_of("llm-router"), labels_of("milvus"), 19530)


def test_prod_reaches_milvus_and_redis_in_their_namespaces(rendered: dict[str, list[Obj]]) -> None:
    policies = of_kind(rendered["prod"], "NetworkPolicy")

    def egress_namespaces(name: str, port: int) -> set[str]:
        spec = policies[name]["spec"]
        return {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for rule in spec.get("egress", [])
            if port in [p["port"] for p in rule.get("ports", [])]
            for peer in rule.get("to", [])
            if "namespaceSelector" in peer
        }

    assert egress_namespaces("retrieval", 19530) == {"milvus"}
    assert egress_namespaces("gateway", 6379) == {"redis"}
    for name in ("embedding", "llm-router"):
        assert not egress_namespaces(name, 19530)
        assert not egress_namespaces(name, 6379)


@pytest.mark.parametrize("name", [*SERVICES, MODEL_SERVER])
def test_prometheus_reaches_the_metrics_ports(rendered: dict[str, list[Obj]], name: str) -> None:
    spec = of_kind(rendered["prod"], "NetworkPolicy")[name]["spec"]
    port = METRICS_PORTS[name]
    from_prometheus = [
        rule
        for rule in spec["ingress"]
        for peer in rule.get("from", [])
        if peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
        == "prometheus"
        and peer.get("namespaceSelector", {}).get("matchLabels")
        == {"kubernetes.io/metadata.name": "monitoring"}
    ]
    assert any(port in [p["port"] for p in rule["ports"]] for rule in from_prometheus)


# Prod: scaling, disruption, spreading


def test_prod_autoscales_every_service(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["prod"]
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    scaled = of_kind(objects, "ScaledObject")
    deployments = of_kind(objects, "Deployment")
    for name in deployments:
        targets = [h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()]
        targets += [s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()]
        assert targets.count(name) == 1, f"{name}: exactly one autoscaler expected"
    for name in ("gateway", "llm-router", MODEL_SERVER):
        metrics = hpas[name]["spec"]["metrics"]
        assert [m["resource"]["name"] for m in metrics] == ["cpu"]
        assert hpas[name]["spec"]["minReplicas"] >= 2


def test_prod_scales_embedding_on_cpu_and_queue(rendered: dict[str, list[Obj]]) -> None:
    scaled = of_kind(rendered["prod"], "ScaledObject")["embedding"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "embedding",
    }
    assert scaled["spec"]["minReplicaCount"] >= 2
    triggers = {t["type"]: t for t in scaled["spec"]["triggers"]}
    assert set(triggers) == {"cpu", "prometheus"}
    query = triggers["prometheus"]["metadata"]["query"]
    assert "aimesh_embedding_queue_inputs" in query
    assert float(triggers["prometheus"]["metadata"]["threshold"]) > 0
    assert not any(
        h["spec"]["scaleTargetRef"]["name"] == "embedding"
        for h in of_kind(rendered["prod"], "HorizontalPodAutoscaler").values()
    )


def test_prod_has_a_pdb_per_service(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["prod"]
    pdbs = of_kind(objects, "PodDisruptionBudget")
    for name, deployment in of_kind(objects, "Deployment").items():
        covering = [
            p for p in pdbs.values() if selects(p["spec"]["selector"], pod_labels(deployment))
        ]
        assert len(covering) == 1, name
        assert deployment["spec"]["replicas"] >= 2, f"{name}: a PDB needs more than one pod"


def test_prod_spreads_over_nodes_and_zones(rendered: dict[str, list[Obj]]) -> None:
    for name, deployment in of_kind(rendered["prod"], "Deployment").items():
        constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        keys = {c["topologyKey"] for c in constraints}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
        for constraint in constraints:
            assert selects(constraint["labelSelector"], pod_labels(deployment)), name


def test_prod_rolls_without_losing_capacity(rendered: dict[str, list[Obj]]) -> None:
    for name, deployment in of_kind(rendered["prod"], "Deployment").items():
        strategy = deployment["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate", name
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0, name


def test_prod_grpc_services_are_headless_and_probed_over_grpc(
    rendered: dict[str, list[Obj]],
) -> None:
    services = of_kind(rendered["prod"], "Service")
    deployments = of_kind(rendered["prod"], "Deployment")
    for name, port in GRPC_PORTS.items():
        assert services[name]["spec"]["clusterIP"] == "None"
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port
    # Envoy balances per gateway pod through a headless Service.
    assert services["gateway-headless"]["spec"]["clusterIP"] == "None"


def test_prod_uses_milvus_and_redis_by_url_only(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["prod"]
    config = next(o for o in objects if o["metadata"]["name"].startswith("aimesh-config"))
    assert config["data"]["AIMESH_MILVUS_URI"] == "http://milvus.milvus.svc.cluster.local:19530"
    names = {o["metadata"]["name"] for o in workloads(objects)}
    assert names == {*SERVICES, "envoy", WEB, MODEL_SERVER}, (
        "Milvus and Redis are not ours to run in prod"
    )
    gateway = of_kind(objects, "Deployment")["gateway"]["spec"]["template"]["spec"]
    redis = [e for e in gateway["containers"][0]["env"] if e["name"] == "AIMESH_REDIS_URL"]
    assert redis[0]["valueFrom"]["secretKeyRef"]["name"].startswith("aimesh-secrets")


def test_prod_embedding_is_guaranteed_qos(rendered: dict[str, list[Obj]]) -> None:
    """A CPU-bound model server: request = limit, so it is never throttled below its share."""
    container = of_kind(rendered["prod"], "Deployment")["embedding"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"]


def test_prod_service_monitors_cover_every_service(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["prod"]
    monitors = of_kind(objects, "ServiceMonitor")
    services = of_kind(objects, "Service")
    for name in [*SERVICES, "envoy"]:
        monitor = monitors[name]["spec"]
        assert monitor["jobLabel"] == "app.kubernetes.io/name"
        matched = [
            s for s in services.values() if selects(monitor["selector"], s["metadata"]["labels"])
        ]
        assert [s["metadata"]["name"] for s in matched] == [name], name
        port_names = {p["name"] for p in matched[0]["spec"]["ports"]}
        for endpoint in monitor["endpoints"]:
            assert endpoint["port"] in port_names, name


def test_dev_runs_one_replica_of_everything(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["dev"]
    assert not of_kind(objects, "HorizontalPodAutoscaler")
    names = set()
    for workload in workloads(objects):
        assert workload["spec"]["replicas"] == 1
        names.add(workload["metadata"]["name"])
    assert names == {*SERVICES, WEB, MODEL_SERVER, "milvus", "redis"}
    config = next(o for o in objects if o["metadata"]["name"].startswith("aimesh-config"))
    assert config["data"]["AIMESH_MILVUS_URI"] == "http://milvus:19530"
    assert config["data"]["AIMESH_REDIS_URL"] == "redis://redis:6379/0"


def test_helm_values_are_parseable_and_pinned() -> None:
    for chart in ("milvus", "redis"):
        folder = OVERLAYS / "prod" / chart
        pin = yaml.safe_load((folder / "chart.yaml").read_text())
        assert pin["repository"].startswith("https://")
        version = str(pin["version"])
        assert version[0].isdigit()
        assert "*" not in version
        assert "^" not in version
        assert isinstance(yaml.safe_load((folder / "values.yaml").read_text()), dict)


def test_milvus_values_run_cluster_mode() -> None:
    values = yaml.safe_load((OVERLAYS / "prod" / "milvus" / "values.yaml").read_text())
    assert values["cluster"]["enabled"] is True
    assert values["standalone"]["replicas"] == 0 or not values.get("standalone", {}).get(
        "enabled", False
    )
    assert values["etcd"]["replicaCount"] == 3
    assert values["minio"]["enabled"] is False
    assert values["externalS3"]["enabled"] is True
    assert values["pulsarv3"]["enabled"] is False or values["kafka"]["enabled"] is False
    assert values["queryNode"]["replicas"] >= 2
    assert values["proxy"]["replicas"] >= 2


def test_prod_uses_the_secret_managed_outside_git(rendered: dict[str, list[Obj]]) -> None:
    """No placeholder Secret is shipped: every reference names the real "aimesh-secrets"."""
    objects = rendered["prod"]
    assert not of_kind(objects, "Secret")
    names = {
        entry["valueFrom"]["secretKeyRef"]["name"]
        for deployment in of_kind(objects, "Deployment").values()
        for container in deployment["spec"]["template"]["spec"]["containers"]
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    assert names == {"aimesh-secrets"}
