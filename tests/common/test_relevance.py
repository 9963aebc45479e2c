"""Retrieval metrics, checked by hand."""

from __future__ import annotations

import math

import pytest

from aimesh_common.relevance import (
    documents_in_order,
    evaluate,
    mrr_at,
    ndcg_at,
    query_metrics,
    recall_at,
)


def test_metrics_by_hand() -> None:
    ranking = ["x", "a", "y", "b"]
    relevant = {"a": 1, "b": 2, "z": 0}
    assert recall_at(ranking, relevant, 1) == 0.0
    assert recall_at(ranking, relevant, 2) == 0.5
    assert recall_at(ranking, relevant, 10) == 1.0
    assert mrr_at(ranking, relevant) == 0.5
    assert mrr_at(ranking, relevant, k=1) == 0.0
    dcg = 1 / math.log2(3) + 2 / math.log2(5)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(ranking, relevant) == pytest.approx(dcg / ideal)
    assert recall_at(ranking, {"z": 0}, 5) == 0.0
    assert ndcg_at(ranking, {}) == 0.0


def test_evaluate_averages_over_queries_with_a_relevant_document() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    rankings = {"q1": ["a"], "q2": ["x", "y", "z", "w", "v", "b"]}
    metrics = evaluate(rankings, qrels)
    assert metrics["recall@1"] == 0.5
    assert metrics["recall@5"] == 0.5
    assert metrics["recall@10"] == 1.0
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 6) / 2)
    assert query_metrics(["a"], {"a": 1})["ndcg@10"] == 1.0
    with pytest.raises(ValueError, match="no relevant"):
        evaluate(rankings, {"q": {"a": 0}})


def test_documents_in_order_of_their_best_chunk() -> None:
    assert documents_in_order(["d2", "d1", "d2", "d3", "d1"]) == ["d2", "d1", "d3"]
