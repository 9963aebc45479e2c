"""scripts/embedding_memory.py: the figures it reports from an RSS curve."""

from __future__ import annotations

import pytest

from scripts.embedding_memory import Result, report, slope_per_hour


def test_slope_is_per_hour() -> None:
    assert slope_per_hour([0, 60, 120], [500, 501, 502]) == pytest.approx(60.0)
    assert slope_per_hour([0, 60, 120], [500, 500, 500]) == 0.0
    assert slope_per_hour([10], [500]) == 0.0


def test_report_fits_the_slope_after_the_warm_up_only() -> None:
    # A steep warm-up, then about 10 MiB over 3 minutes: 204 MiB an hour on 600 MiB.
    result = Result(
        env={},
        at=[0, 30, 60, 120, 180, 240],
        mib=[500, 590, 600, 603, 607, 610],
        calls=10,
        inputs=40,
        seconds=240,
        latencies=[0.01] * 10,
    )
    summary = report(result, warmup=60)
    assert summary["start_mib"] == 500
    assert summary["after_warmup_mib"] == 600
    assert summary["end_mib"] == summary["peak_mib"] == 610
    assert summary["slope_mib_per_hour"] == pytest.approx(204.0, abs=0.1)
    assert summary["slope_pct_per_hour"] == pytest.approx(34.0, abs=0.1)
    assert summary["inputs_per_second"] == pytest.approx(0.2, abs=0.01)
