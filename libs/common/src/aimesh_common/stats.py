"""The one percentile aimesh reports (nearest rank), so figures from any tool compare."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile: the smallest value with at least ``q`` % of the
    values at or below it (p50 of 1, 2, 3, 4 is 2; p95 of 20 values is the 19th smallest).

    Raises ValueError for no values or ``q`` outside (0, 100].
    """
    if not 0 < q <= 100:
        raise ValueError("q must be in (0, 100]")
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[rank - 1]
