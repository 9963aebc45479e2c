"""Numbered sources, packing into a token budget, and citation parsing/filtering."""

from __future__ import annotations

import pytest

from aimesh_llm_router.citations import Source, filter_citations, pack_sources, render_sources
from aimesh_llm_router.tokens import estimate_tokens


def test_estimate_counts_words_and_punctuation() -> None:
    assert estimate_tokens("Hello, world!") == 4
    assert estimate_tokens("") == 0


def test_render_sources_numbers_blocks() -> None:
    rendered = render_sources([Source(1, " alpha "), Source(2, "beta")])
    assert rendered == "[1] alpha\n\n[2] beta"


def test_pack_keeps_order_and_numbers_from_one() -> None:
    sources = pack_sources(["first chunk", "second chunk", "third chunk"], budget_tokens=1000)
    assert [(s.number, s.text) for s in sources] == [
        (1, "first chunk"),
        (2, "second chunk"),
        (3, "third chunk"),
    ]


def test_pack_drops_the_weakest_chunks_beyond_the_budget() -> None:
    texts = ["one two three four five"] * 10  # 5 tokens + 4 overhead each
    sources = pack_sources(texts, budget_tokens=30)
    assert len(sources) == 3
    assert sum(estimate_tokens(s.text) + 4 for s in sources) <= 30


def test_pack_truncates_a_single_long_first_chunk() -> None:
    long = " ".join(f"w{i}" for i in range(500))
    sources = pack_sources([long, "short"], budget_tokens=54)
    assert len(sources) == 1
    assert sources[0].text.split() == [f"w{i}" for i in range(50)]


def test_pack_with_no_room_returns_nothing() -> None:
    assert pack_sources(["a b c"], budget_tokens=2) == []


@pytest.mark.parametrize(
    ("answer", "valid", "text", "cited"),
    [
        ("Paris is the capital [1].", {1, 2}, "Paris is the capital [1].", (1,)),
        ("A [2]. B [1].", {1, 2}, "A [2]. B [1].", (1, 2)),
        ("A [7]. B [1].", {1, 2}, "A. B [1].", (1,)),
        ("Both [1, 2] and [1][3].", {1, 2, 3}, "Both [1, 2] and [1][3].", (1, 2, 3)),
        ("Mixed [2, 9, 2].", {1, 2}, "Mixed [2].", (2,)),
        ("Nothing valid [0] [4].", {1, 2, 3}, "Nothing valid.", ()),
        ("I don't know.", {1}, "I don't know.", ()),
        ("Not a citation [a] or [1.5].", {1}, "Not a citation [a] or [1.5].", ()),
    ],
)
def test_filter_citations(answer: str, valid: set[int], text: str, cited: tuple[int, ...]) -> None:
    result = filter_citations(answer, valid)
    assert result.text == text
    assert result.cited == cited
