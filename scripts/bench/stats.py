"""The one percentile the benchmarks report (nearest rank), so their figures compare."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank ``pct`` percentile: the smallest value with at least ``pct`` % of
    the values at or below it (p50 of 1..4 is 2, p99 of 1..100 is 99)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
