"""Parts of the engines that need no model."""

from __future__ import annotations

import pytest

from aimesh_model_server.engine import NgramGuard, repeats_ngram


@pytest.mark.parametrize(
    ("tokens", "size", "repeats"),
    [
        ([1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6], 6, True),  # the first six said again
        ([1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 8], 6, False),  # five of six: not a repeat
        ([1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6], 7, False),
        ([9, 7, 7, 7, 7, 7, 7, 7], 6, True),  # one token seven times: two overlapping 6-grams
        ([9, 7, 7, 7, 7, 7, 7], 6, False),
        ([1, 2, 1, 2, 1, 2, 1, 2], 6, True),  # "- nodes" four times
        ([1, 2, 3], 0, False),  # size 0: the guard is off
        ([], 6, False),
    ],
)
def test_repeats_ngram_finds_an_ngram_said_twice(
    tokens: list[int], size: int, repeats: bool
) -> None:
    assert repeats_ngram(tokens, size) is repeats


def test_the_guard_stops_at_the_first_repeat_as_it_is_fed() -> None:
    guard = NgramGuard(3)
    said = [guard.add(token) for token in [1, 2, 3, 4, 1, 2, 3, 9]]
    # (1, 2, 3) again at the seventh token, not before.
    assert said == [False, False, False, False, False, False, True, False]
    off = NgramGuard(0)
    assert not any(off.add(7) for _ in range(20))
