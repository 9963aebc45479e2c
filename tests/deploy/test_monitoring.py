"""Monitoring (k8s/monitoring): the alert rules pass `promtool check rules`, every alert
fires and clears in `promtool test rules`, runbooks exist, dashboards are valid PromQL over
metrics the services really export, and a real Prometheus scrapes the running mesh.

promtool and prometheus come from Debian's `prometheus` package (apt-get install prometheus).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from scripts.devmesh import Mesh, free_port

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
RULE = MONITORING / "prometheusrule.yaml"
RULE_TESTS = MONITORING / "tests" / "alerts.test.yaml"
DASHBOARDS = sorted((MONITORING / "dashboards").glob("*.json"))
OPERATIONS = ROOT / "docs" / "operations.md"
SERVICES = ["gateway", "embedding", "retrieval", "llm-router"]
# Metrics the rules watch that no service exports yet, and why the rule is there anyway.
NOT_YET_EXPORTED: dict[str, str] = {}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (apt-get install prometheus)",
)

Obj = dict[str, Any]


def spec() -> Obj:
    rule: Obj = yaml.safe_load(RULE.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    return dict(rule["spec"])


def alerts() -> list[Obj]:
    return [r for group in spec()["groups"] for r in group["rules"] if "alert" in r]


def write_rules(folder: Path, *, annotations: bool = True, interval: str | None = None) -> Path:
    """The PrometheusRule's groups as a plain Prometheus rule file; ``interval`` replaces
    every group's evaluation interval (the live Prometheus below evaluates every second
    instead of waiting up to 30 s for the first evaluation: same rules, same expressions)."""
    groups = spec()
    for group in groups["groups"]:
        if interval is not None:
            group["interval"] = interval
        if not annotations:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path = folder / "aimesh.rules.yaml"
    path.write_text(yaml.safe_dump(groups, sort_keys=False))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=300, check=False
    )


def exported_metrics() -> set[str]:
    """Every aimesh_* metric family the code defines (as exposed, with _total for counters)."""
    names: set[str] = set()
    pattern = re.compile(r"(Counter|Gauge|Histogram|Summary)\(\s*\"(aimesh_[a-z0-9_]+)\"", re.S)
    for path in [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("libs/common/src/**/*.py")]:
        for kind, name in pattern.findall(path.read_text()):
            if kind == "Counter":
                names.add(name.removesuffix("_total") + "_total")
            elif kind in {"Histogram", "Summary"}:
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            else:
                names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(aimesh_[a-z0-9_]+)", expr))


# promtool


@needs_promtool
def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    result = promtool("check", "rules", str(write_rules(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    path = write_rules(tmp_path)
    path.write_text(path.read_text().replace("> 0.02", "> > 0.02", 1))
    assert promtool("check", "rules", str(path)).returncode != 0


@needs_promtool
def test_every_alert_fires_and_clears(tmp_path: Path) -> None:
    write_rules(tmp_path, annotations=False)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = promtool("test", "rules", str(tmp_path / RULE_TESTS.name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_cover_every_alert() -> None:
    """Each alert has a case where it fires and a later one where it has cleared."""
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases: dict[str, list[tuple[str, bool]]] = {}
    for test in tests:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(
                (case["eval_time"], bool(case["exp_alerts"]))
            )
    for alert in alerts():
        name = alert["alert"]
        outcomes = [fired for _, fired in cases.get(name, [])]
        assert True in outcomes, f"{name} never fires in the tests"
        assert False in outcomes[outcomes.index(True) :], f"{name} never clears after firing"


# What an on-call needs from each alert


def test_the_alerts_an_on_call_needs_exist() -> None:
    names = {alert["alert"] for alert in alerts()}
    assert names >= {
        "AimeshHighErrorRatio",
        "AimeshLatencyHigh",
        "AimeshNoReadyPods",
        "AimeshEmbeddingQueueSaturated",
        "AimeshRateLimitSurge",
        "AimeshLLMUpstreamErrors",
        "AimeshLLMFallbacksRising",
        "AimeshMilvusUnreachable",
        "AimeshTenantOverBudget",
    }


def test_error_ratio_alert_is_two_percent_for_five_minutes() -> None:
    alert = next(a for a in alerts() if a["alert"] == "AimeshHighErrorRatio")
    assert alert["expr"].strip() == "aimesh:request_errors:ratio_rate5m > 0.02"
    assert alert["for"] == "5m"


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_links_to_its_runbook() -> None:
    anchors = {
        slug(line.lstrip("#"))
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    for alert in alerts():
        annotations = alert["annotations"]
        assert annotations["summary"], alert["alert"]
        assert annotations["description"], alert["alert"]
        url = annotations["runbook_url"]
        assert "/docs/operations.md#" in url, alert["alert"]
        anchor = url.rsplit("#", 1)[1]
        assert anchor == alert["alert"].lower()
        assert anchor in anchors, f"docs/operations.md has no section #{anchor}"
        assert alert["labels"]["severity"] in {"page", "ticket"}


def test_rules_watch_metrics_the_services_export() -> None:
    exported = exported_metrics()
    assert "aimesh_grpc_server_handled_total" in exported
    assert "aimesh_http_request_duration_seconds_bucket" in exported
    for group in spec()["groups"]:
        for rule in group["rules"]:
            for name in metric_names(rule["expr"]):
                if name not in NOT_YET_EXPORTED:
                    assert name in exported, f"{rule.get('alert') or rule['record']}: {name}"


# Dashboards


def dashboard_targets() -> list[tuple[str, str]]:
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.stem}: {panel['title']}", target["expr"]))
    return found


def test_dashboards_are_valid_grafana_json() -> None:
    assert {p.stem for p in DASHBOARDS} == {
        "aimesh-red",
        "aimesh-llm-cost",
        "aimesh-embedding",
        "aimesh-gateway-cache",
    }
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] not in uids
        uids.add(board["uid"])
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        variables = {v["name"] for v in board["templating"]["list"]}
        assert "datasource" in variables
        for panel in board["panels"]:
            assert panel["type"] in {"row", "timeseries", "bargauge", "stat"}, path.name
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    shipped = {f for entry in kustomization["configMapGenerator"] for f in entry["files"]}
    assert shipped == {f"dashboards/{p.name}" for p in DASHBOARDS}


def test_red_dashboard_covers_every_service() -> None:
    exprs = " ".join(expr for where, expr in dashboard_targets() if where.startswith("aimesh-red"))
    for service in SERVICES:
        assert f'job="{service}"' in exprs, service


def test_dashboards_query_exported_metrics() -> None:
    exported = exported_metrics()
    for where, expr in dashboard_targets():
        for name in metric_names(expr):
            assert name in exported or name in NOT_YET_EXPORTED, f"{where}: {name}"


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query (as a recording rule; Grafana variables filled in)."""
    rules = [
        {
            "record": f"dashboard:query_{index}",
            "expr": expr.replace("$namespace", "aimesh").replace("$tenant", ".*"),
        }
        for index, (_, expr) in enumerate(dashboard_targets())
    ]
    path = tmp_path / "dashboards.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# A real Prometheus scraping the running mesh


@pytest.fixture(scope="module")
def prometheus(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    folder = tmp_path_factory.mktemp("prometheus")
    rules = write_rules(folder, interval="1s")
    p = mesh.ports
    targets = {
        "gateway": p.gateway,
        "embedding": p.embedding_metrics,
        "retrieval": p.retrieval_metrics,
        "llm-router": p.llm_router_metrics,
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
            }
            for job, port in targets.items()
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-2000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        else:
            pytest.fail(f"prometheus not ready:\n{log.read_text()[-2000:]}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def query(url: str, promql: str) -> list[Obj]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert body["status"] == "success", body
    result: list[Obj] = body["data"]["result"]
    return result


def eventually(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last: {last}")


@pytest.mark.slow
def test_prometheus_scrapes_every_service(prometheus: str, mesh: Mesh) -> None:
    def all_up() -> set[str]:
        ups = query(prometheus, "up == 1")
        jobs = {series["metric"]["job"] for series in ups}
        return jobs if jobs == set(SERVICES) else set()

    eventually(all_up, "every service's target up")
    # Traffic through the gateway reaches every backend, so each exports its own families.
    headers = {"Authorization": f"Bearer {mesh.admin_api_key}"}
    with httpx.Client(base_url=mesh.url, timeout=60, headers=headers) as client:
        stored = client.post(
            "/v1/collections/prom/documents",
            json={"documents": [{"id": "d", "text": "Prometheus scrapes metrics over HTTP."}]},
        )
        assert stored.status_code == 200, stored.text
        asked = client.post("/v1/ask", json={"question": "What scrapes?", "collection": "prom"})
        assert asked.status_code == 200, asked.text

    expected = {
        "gateway": "aimesh_http_requests_total",
        "embedding": "aimesh_embedding_inputs_total",
        "retrieval": "aimesh_retrieval_search_seconds_count",
        "llm-router": "aimesh_llm_requests_total",
    }
    for job, metric in expected.items():
        eventually(lambda j=job, m=metric: query(prometheus, f'{m}{{job="{j}"}} > 0'), metric)
    for job in ("embedding", "retrieval", "llm-router"):
        eventually(
            lambda j=job: query(prometheus, f'aimesh_grpc_server_handled_total{{job="{j}"}}'),
            f"{job} gRPC metrics",
        )


@pytest.mark.slow
def test_rules_evaluate_against_the_real_metrics(prometheus: str) -> None:
    """Every rule loads and evaluates without error on what the mesh really exports."""

    def evaluated() -> list[Obj]:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = all(rule.get("lastEvaluation", "").startswith("20") for rule in rules)
        return rules if rules and done else []

    rules = eventually(evaluated, "every rule evaluated once")
    assert {r["name"] for r in rules if r["type"] == "alerting"} == {a["alert"] for a in alerts()}
    for rule in rules:
        assert rule["health"] == "ok", rule
    # The recorded error ratio exists for the services that saw traffic.
    eventually(
        lambda: query(prometheus, "aimesh:request_errors:ratio_rate5m"), "recorded error ratio"
    )
