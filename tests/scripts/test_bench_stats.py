"""The benchmarks' percentile (nearest rank)."""

from __future__ import annotations

import pytest

from scripts.bench.stats import percentile


def test_nearest_rank_by_hand() -> None:
    assert percentile([4, 1, 3, 2], 50) == 2
    assert percentile([4, 1, 3, 2], 75) == 3
    assert percentile([4, 1, 3, 2], 100) == 4
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile(list(range(1, 101)), 99.5) == 100
    assert percentile([7.5], 99) == 7.5


def test_no_values_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
