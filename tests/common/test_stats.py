"""The nearest-rank percentile every tool reports (benchmarks, the QA evaluation)."""

from __future__ import annotations

import pytest

from aimesh_common.stats import percentile


def test_nearest_rank_by_hand() -> None:
    assert percentile([4, 1, 3, 2], 50) == 2  # ceil(0.5 * 4) = 2nd smallest
    assert percentile([4, 1, 3, 2], 75) == 3
    assert percentile([4, 1, 3, 2], 95) == 4  # ceil(0.95 * 4) = 4th
    assert percentile([4, 1, 3, 2], 100) == 4
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile(list(range(1, 101)), 99.5) == 100
    twenty = [float(value) for value in range(20, 0, -1)]
    assert percentile(twenty, 95) == 19.0  # ceil(0.95 * 20) = 19th
    assert percentile(twenty, 50) == 10.0
    assert percentile([7.5], 99) == 7.5


def test_no_values_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


@pytest.mark.parametrize("q", [0, -5, 100.5])
def test_q_outside_0_to_100_is_an_error(q: float) -> None:
    with pytest.raises(ValueError, match=r"q must be in \(0, 100\]"):
        percentile([1.0], q)
