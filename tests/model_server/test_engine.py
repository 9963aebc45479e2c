"""Parts of the engines that need no model."""

from __future__ import annotations

import pytest

from aimesh_model_server.engine import looping


@pytest.mark.parametrize(
    ("tokens", "loops"),
    [
        ([1, 2, 3, 4, 5] * 4, True),  # one 5-token line four times (20 tokens)
        ([9, 8] + [7] * 16, True),  # one token sixteen times
        ([9, 8] + [7] * 15, False),  # fifteen: still short of the span
        ([1, 2, 3, 4, 5, 6] * 2, False),  # said twice: not yet a loop
        (list(range(40)) + list(range(40)), False),  # a 40-token block: longer than looked for
        ([1, 2, 3, 4, 5] * 4 + [6], False),  # the loop was left
        ([0] + [1, 2, 3, 4] * 4, True),  # 17 tokens: a 4-token block (span 16) still counts
        ([], False),
    ],
)
def test_looping_sees_a_reply_that_repeats_itself(tokens: list[int], loops: bool) -> None:
    assert looping(tokens) is loops
