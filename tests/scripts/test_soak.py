"""The soak (``make soak``): its windows, its verdict, and a short real run of the mesh."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.soak import (
    Record,
    Samples,
    Traffic,
    analyse,
    attribute,
    cpu_percent,
    plan_for,
    slope_per_hour,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_run_keeps_the_issues_windows_and_short_runs_scale_them_down() -> None:
    two_hours = plan_for(7200, 8)
    assert (two_hours.cache_ttl, two_hours.window) == (300, 600)
    assert two_hours.warmup == 720  # a tenth of the run: longer than the cache's lifetime
    ten_minutes = plan_for(600, 8)
    # The cache lives a tenth of the run, so it is full (expiring as fast as it fills)
    # before the memory fit starts.
    assert ten_minutes.cache_ttl == 60
    assert ten_minutes.warmup >= ten_minutes.cache_ttl + 60
    assert ten_minutes.window == 120
    tiny = plan_for(20, 1)
    assert tiny.warmup <= 10
    assert tiny.window == 4
    with pytest.raises(ValueError, match="positive"):
        plan_for(0, 8)


def test_the_slope_is_a_least_squares_fit() -> None:
    at = [0.0, 1800.0, 3600.0]
    slope, start = slope_per_hour(at, [100.0, 103.0, 104.0])
    assert slope == pytest.approx(4.0)
    assert start == pytest.approx(100.0 + 1 / 3)
    assert slope_per_hour([5.0], [7.0]) == (0.0, 7.0)


def _run(memory: dict[str, list[float]], late_ms: float, errors: int = 0) -> dict[str, object]:
    """A synthetic 20-minute run: requests every second, memory every 10 s."""
    plan = plan_for(1200, 1)
    records = [
        Record(float(t), "search", (10.0 if t < 600 else late_ms) / 1000, True) for t in range(1200)
    ]
    records += [Record(float(t), "ask", 0.5, False) for t in range(errors)]
    samples = Samples()
    samples.at = [float(t) for t in range(0, 1200, 10)]
    for name, (start, per_hour) in memory.items():
        samples.mib[name] = [start + per_hour * t / 3600 for t in samples.at]
    return analyse(plan, records, samples, 1200.0)


FLAT = {"gateway": [140.0, 0.0], "embedding": [700.0, 0.0], "retrieval": [260.0, 0.0]}


def test_a_flat_run_passes() -> None:
    result = _run(FLAT, late_ms=10.5)
    assert result["passed"] is True
    assert result["p50_drift_pct"] == pytest.approx(5.0)
    assert result["memory"]["gateway"]["growth_pct_per_hour"] == pytest.approx(0.0)  # type: ignore[index]


def test_growth_drift_and_errors_each_fail_the_run() -> None:
    growing = _run({**FLAT, "gateway": [140.0, 14.0]}, late_ms=10.0)  # 10 % an hour
    assert growing["checks"] == {"memory": False, "p50_drift": True, "errors": True}
    memory = growing["memory"]["gateway"]  # type: ignore[index]
    assert memory["slope_mib_per_hour"] == pytest.approx(14.0)
    assert memory["growth_pct_per_hour"] == pytest.approx(10.0, rel=0.05)
    slower = _run(FLAT, late_ms=12.0)
    assert slower["checks"] == {"memory": True, "p50_drift": False, "errors": True}
    failing = _run(FLAT, late_ms=10.0, errors=1)
    assert failing["checks"] == {"memory": True, "p50_drift": True, "errors": False}
    assert failing["errors"] == 1
    assert failing["passed"] is False


def test_cpu_is_the_share_of_one_core_between_two_samples_and_per_request() -> None:
    at = [0.0, 10.0, 20.0, 30.0]
    assert cpu_percent(at, [0.0, 5.0, 10.0, 25.0], 0.0, 20.0) == pytest.approx(50.0)
    assert cpu_percent(at, [0.0, 5.0, 10.0, 25.0], 20.0, 30.0) == pytest.approx(150.0)
    # A span shorter than the sampling interval takes the samples around it.
    assert cpu_percent(at, [0.0, 5.0, 10.0, 25.0], 22.0, 26.0) == pytest.approx(150.0)
    assert math.isnan(cpu_percent([0.0], [3.0], 0.0, 10.0))  # one sample: no rate
    plan = plan_for(1200, 1)
    records = [Record(float(t), "search", 0.01, True) for t in range(1200)]
    samples = Samples()
    samples.at = [float(t) for t in range(0, 1201, 10)]
    # Retrieval uses 20 % of a core for 10 minutes, then 60 %.
    samples.cpu["retrieval"] = [
        t * (0.2 if t <= 600 else 0.6) - (240 if t > 600 else 0) for t in samples.at
    ]
    samples.machine = [t * 1.0 for t in samples.at]
    result = analyse(plan, records, samples, 1200.0)
    assert result["cpu"]["first"]["retrieval"] == pytest.approx(20.0)
    assert result["cpu"]["last"]["retrieval"] == pytest.approx(60.0)
    assert result["cpu"]["last_ms_per_request"]["retrieval"] == pytest.approx(600.0, rel=0.01)
    assert result["cpu"]["first"]["machine"] == pytest.approx(100.0)
    assert result["per_minute"][15]["cpu_pct"]["retrieval"] == pytest.approx(60.0)


def test_upserts_rewrite_a_fixed_set_of_documents_or_add_new_ones() -> None:
    traffic = Traffic(28)
    assert plan_for(600, 8).documents == 2000
    first, again = traffic.document(3, pool=10), traffic.document(13, pool=10)
    assert first["id"] == again["id"] == "soak-000003"
    assert first["text"] != again["text"]  # a rewrite changes the document
    assert traffic.document(13)["id"] == "soak-000013"  # no pool: a new document each time
    assert traffic.document(13) == traffic.document(13)  # deterministic


def test_the_fresh_window_says_whose_drift_it_is() -> None:
    limit = 10.0
    assert attribute(10.0, 10.5, 12.0, limit) == "no drift"
    assert attribute(10.0, 20.0, 19.0, limit).startswith("the data or the machine")
    assert attribute(10.0, 20.0, 10.5, limit).startswith("the processes")
    assert attribute(10.0, 20.0, 15.0, limit) == (
        "partly the processes: a restart took back 50 % of the drift"
    )
    assert attribute(10.0, 20.0, 30.0, limit).startswith("unclear")
    assert attribute(10.0, 20.0, 0.0, limit) == "not measured"


def test_the_fresh_window_is_reported_and_its_errors_fail_the_run() -> None:
    assert plan_for(7200, 8).fresh_seconds == 300
    assert plan_for(600, 8).fresh_seconds == 120
    assert plan_for(600, 8, fresh_seconds=0).fresh_seconds == 0
    plan = plan_for(1200, 1)
    records = [
        Record(float(t), "search", (10.0 if t < 600 else 20.0) / 1000, True) for t in range(1200)
    ]
    samples = Samples()
    samples.at = [float(t) for t in range(0, 1200, 10)]
    samples.mib["gateway"] = [140.0 for _ in samples.at]
    fresh = [Record(float(t), "search", 0.0105, True) for t in range(60)]
    result = analyse(plan, records, samples, 1200.0, fresh)
    assert result["windows"]["fresh"]["search"]["p50_ms"] == pytest.approx(10.5)
    assert str(result["drift_owner"]).startswith("the processes")
    assert result["checks"] == {"memory": True, "p50_drift": False, "errors": True}
    failed = analyse(plan, records, samples, 1200.0, [*fresh, Record(61.0, "ask", 0.1, False)])
    assert failed["fresh_errors"] == 1
    assert failed["checks"]["errors"] is False
    assert analyse(plan, records, samples, 1200.0)["drift_owner"] == "not measured"


@pytest.mark.faults  # a whole mesh for 20 s: `make test-faults`, not the default run
def test_a_short_soak_runs_the_mesh_and_reports(tmp_path: Path) -> None:
    """20 s at 1 request a second: the real mesh, the report, the JSON and the exit status.

    Memory slopes over 20 s say nothing (the model's first batches still allocate), so the
    verdict itself is not asserted here, only that the run measured and judged.
    """
    result_path = tmp_path / "soak.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.soak",
            "--seconds",
            "20",
            "--rate",
            "1",
            "--documents",
            "150",
            "--json",
            str(result_path),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert ("soak PASSED" in done.stdout) == (done.returncode == 0), done.stdout
    result = json.loads(result_path.read_text())
    routes = {row_route for row in result["per_minute"] for row_route in row}
    assert {"search", "ask", "chat", "embeddings", "upsert"} <= routes, result["per_minute"]
    assert result["requests"] >= 15
    assert set(result["memory"]) == {"gateway", "embedding", "retrieval", "llm-router"}
    assert all(m["start_mib"] > 20 for m in result["memory"].values())
    assert len(result["memory_samples"]["at"]) >= 2
    assert result["windows"]["first"]["all"]["count"] > 0
    assert set(result["checks"]) == {"memory", "p50_drift", "errors"}
    # The fresh window ran against the restarted services on the same data.
    assert result["fresh_requests"] >= 1
    assert result["windows"]["fresh"]["all"]["count"] >= 1
    assert "restarting every service" in done.stdout
    assert (tmp_path / "out" / "logs" / "gateway.log").exists()
    # CPU was read per service: the embedding service computed the embeddings.
    assert result["cpu"]["first"]["embedding"] > 0, result["cpu"]
    assert result["cpu"]["first"]["machine"] >= result["cpu"]["first"]["embedding"]
    assert "ms per request of the mix" in done.stdout
