"""The aggregate-decode figure of ``make bench-llm``: tokens said while every stream ran."""

from __future__ import annotations

import pytest

from scripts.bench.llm import Timed, overlap_rate


def _run(times: list[float]) -> Timed:
    return Timed(tokens=list(range(len(times))), first=times[0], total=times[-1], at=times)


def test_counts_only_the_window_where_every_stream_decodes() -> None:
    # Stream a: tokens every 0.1 s from 0.0 to 1.0; stream b starts at 0.5, ends at 2.0.
    a = _run([round(0.1 * i, 1) for i in range(11)])
    b = _run([0.5 + 0.25 * i for i in range(7)])
    # Window (0.5, 1.0]: a says 0.6..1.0 (5 tokens), b says 0.75 and 1.0 (2 tokens).
    assert overlap_rate([a, b]) == pytest.approx(7 / 0.5)


def test_one_stream_is_its_own_decode_rate() -> None:
    assert overlap_rate([_run([0.0, 0.5, 1.0, 1.5, 2.0])]) == pytest.approx(2.0)


def test_streams_that_never_ran_together_give_zero() -> None:
    assert overlap_rate([_run([0.0, 1.0]), _run([2.0, 3.0])]) == 0.0
