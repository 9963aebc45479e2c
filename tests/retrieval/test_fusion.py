"""Hybrid fusion methods, checked by hand on small rankings."""

from __future__ import annotations

import math

import pytest

from aimesh_retrieval import fusion

DENSE = [("a", 0.9), ("b", 0.8), ("c", 0.5)]
BM25 = [("c", 12.0), ("d", 6.0), ("a", 3.0)]


def ids(ranking: list[fusion.Scored]) -> list[str]:
    return [key for key, _ in ranking]


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = dict(fusion.rrf(DENSE, BM25, k=10))
    assert fused["a"] == pytest.approx(1 / 11 + 1 / 13)
    assert fused["c"] == pytest.approx(1 / 13 + 1 / 11)
    assert fused["b"] == pytest.approx(1 / 12)
    assert fused["d"] == pytest.approx(1 / 12)
    # Ties keep first-seen order: a (dense first) before c, b before d.
    assert ids(fusion.rrf(DENSE, BM25, k=10)) == ["a", "c", "b", "d"]
    with pytest.raises(ValueError, match="k must be positive"):
        fusion.rrf(DENSE, BM25, k=0)


def test_minmax_and_three_sigma_normalisation() -> None:
    assert fusion.minmax(BM25) == {"c": 1.0, "d": pytest.approx(1 / 3), "a": 0.0}
    assert fusion.minmax([("x", 2.0), ("y", 2.0)]) == {"x": 1.0, "y": 1.0}
    assert fusion.minmax([]) == {}
    scores = [s for _, s in BM25]
    mean = sum(scores) / 3
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / 3)
    normalised = fusion.three_sigma(BM25)
    assert normalised["c"] == pytest.approx((12 - mean + 3 * std) / (6 * std))
    assert all(0.0 <= v <= 1.0 for v in normalised.values())
    assert fusion.three_sigma([("x", 1.0)]) == {"x": 1.0}


def test_milvus_weighted_reproduces_the_weighted_ranker() -> None:
    fused = dict(fusion.milvus_weighted(DENSE, BM25, 0.9))
    assert fused["a"] == pytest.approx(0.9 * (1 + 0.9) / 2 + 0.1 * 2 / math.pi * math.atan(3.0))
    assert fused["d"] == pytest.approx(0.1 * 2 / math.pi * math.atan(6.0))
    with pytest.raises(ValueError, match="dense_weight"):
        fusion.milvus_weighted(DENSE, BM25, 1.5)


def test_convex_weights_the_normalised_lists() -> None:
    assert ids(fusion.convex(DENSE, BM25, 1.0)) == ["a", "b", "c", "d"]
    assert ids(fusion.convex(DENSE, BM25, 0.0))[:3] == ["c", "d", "a"]
    fused = dict(fusion.convex(DENSE, BM25, 0.5))
    # a: dense max (1.0), bm25 min (0.0); c: dense min (0.0), bm25 max (1.0).
    assert fused["a"] == pytest.approx(0.5)
    assert fused["c"] == pytest.approx(0.5)
    assert fused["b"] == pytest.approx(0.5 * 0.75)


def test_dbsf_is_the_sum_of_three_sigma_scores() -> None:
    dense, bm25 = fusion.three_sigma(DENSE), fusion.three_sigma(BM25)
    fused = dict(fusion.dbsf(DENSE, BM25))
    for key in "abcd":
        assert fused[key] == pytest.approx(0.5 * dense.get(key, 0.0) + 0.5 * bm25.get(key, 0.0))


def test_confidence_measures_how_far_the_first_score_stands_out() -> None:
    peaked = [("a", 10.0)] + [(f"x{i}", 1.0) for i in range(9)]
    flat = [(f"x{i}", 1.0 - i * 0.01) for i in range(10)]
    assert fusion.confidence(peaked) == pytest.approx(3.0)
    assert fusion.confidence(flat) < fusion.confidence(peaked)
    assert fusion.confidence([("a", 1.0)]) == 0.0
    assert fusion.confidence([("a", 1.0), ("b", 1.0)]) == 0.0


def test_adaptive_weight_follows_the_more_confident_list() -> None:
    peaked = [("a", 10.0)] + [(f"x{i}", 1.0) for i in range(9)]
    flat = [(f"y{i}", 1.0 - i * 0.01) for i in range(10)]
    assert fusion.adaptive_weight(peaked, flat) > 0.5
    assert fusion.adaptive_weight(flat, peaked) < 0.5
    assert fusion.adaptive_weight(peaked, []) == 1.0
    assert fusion.adaptive_weight([], peaked) == 0.0
    assert fusion.adaptive_weight([], [], prior=0.7) == 0.7
    assert fusion.adaptive_weight(peaked, peaked, prior=0.7) == pytest.approx(0.7)
    # A sharper exponent moves the weight further towards the confident list.
    assert fusion.adaptive_weight(peaked, flat, sharpness=2) > fusion.adaptive_weight(peaked, flat)
    # The confident BM25 list's first hit comes first.
    assert fusion.adaptive(flat, peaked)[0][0] == "a"
