"""The benchmarks report the kit's percentile (tested in tests/common/test_stats.py)."""

from __future__ import annotations

import aimesh_common.stats
from scripts.bench.stats import percentile


def test_the_benchmarks_percentile_is_the_kits() -> None:
    assert percentile is aimesh_common.stats.percentile
    assert percentile([4, 1, 3, 2], 50) == 2
