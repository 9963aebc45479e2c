"""Fusion of a dense and a BM25 ranking into one hybrid ranking: pure functions.

Each ranking is a sequence of ``(id, score)`` pairs, best first, higher scores better
(cosine similarity for dense, BM25 for full text). Every method returns the fused
ranking in the same form, best first; ties keep the order in which ids were first seen
(dense before BM25), so the result is deterministic. An id missing from one ranking
counts as that ranking's lowest (normalised) score, 0.

Methods (compared on six eval sets by ``make bench-quality``, see docs/benchmarks.md):

* :func:`milvus_weighted`: what Milvus' ``WeightedRanker`` computes (cosine mapped to
  ``(1 + s) / 2``, BM25 to ``2 / pi * atan(s)``, then a weighted sum): today's default.
* :func:`rrf`: reciprocal rank fusion, ``sum(1 / (k + rank))``; scores are ignored.
* :func:`convex`: min-max normalisation of each ranking, then a weighted sum.
* :func:`dbsf`: distribution-based score fusion: each ranking normalised by its own
  mean +- 3 standard deviations (clipped to [0, 1]), then summed.
* :func:`adaptive`: a per-query dense weight from the two rankings' score profiles
  (:func:`confidence`: how far the best score stands out of the rest), then the
  DBSF-normalised scores combined with that weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

Scored = tuple[str, float]
Ranking = Sequence[Scored]
Normaliser = Callable[[Ranking], dict[str, float]]

DEFAULT_RRF_K = 60


def _order(totals: Mapping[str, float]) -> list[Scored]:
    # sorted() is stable: ties keep the insertion order of ``totals``.
    return sorted(totals.items(), key=lambda item: -item[1])


def _combine(parts: Sequence[tuple[float, Mapping[str, float]]]) -> list[Scored]:
    totals: dict[str, float] = {}
    for _, scores in parts:
        for key in scores:
            totals.setdefault(key, 0.0)
    for weight, scores in parts:
        for key, score in scores.items():
            totals[key] += weight * score
    return _order(totals)


def rrf(dense: Ranking, bm25: Ranking, k: float = DEFAULT_RRF_K) -> list[Scored]:
    """Reciprocal rank fusion: each id scores ``sum(1 / (k + rank))``, ranks from 1."""
    if k <= 0:
        raise ValueError("k must be positive")
    parts = [
        (1.0, {key: 1.0 / (k + rank) for rank, (key, _) in enumerate(r, 1)}) for r in (dense, bm25)
    ]
    return _combine(parts)


def minmax(ranking: Ranking) -> dict[str, float]:
    """Scores mapped onto [0, 1] by the ranking's own minimum and maximum (all 1 when equal)."""
    if not ranking:
        return {}
    scores = [s for _, s in ranking]
    low, high = min(scores), max(scores)
    span = high - low
    return {key: (s - low) / span if span > 0 else 1.0 for key, s in ranking}


def three_sigma(ranking: Ranking) -> dict[str, float]:
    """Scores mapped by ``(s - (mean - 3 std)) / (6 std)``, clipped to [0, 1] (DBSF)."""
    if not ranking:
        return {}
    scores = [s for _, s in ranking]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    if std == 0:
        return {key: 1.0 for key, _ in ranking}
    low = mean - 3 * std
    return {key: min(1.0, max(0.0, (s - low) / (6 * std))) for key, s in ranking}


def milvus_normalised(ranking: Ranking, metric: str) -> dict[str, float]:
    """Milvus' WeightedRanker normalisation: COSINE ``(1 + s) / 2``, BM25 ``2/pi atan(s)``."""
    if metric == "COSINE":
        return {key: (1.0 + s) / 2.0 for key, s in ranking}
    if metric == "BM25":
        return {key: 2.0 / math.pi * math.atan(s) for key, s in ranking}
    raise ValueError(f"unknown metric {metric}")


def _check_weight(dense_weight: float) -> None:
    if not 0.0 <= dense_weight <= 1.0:
        raise ValueError("dense_weight must be between 0 and 1")


def milvus_weighted(dense: Ranking, bm25: Ranking, dense_weight: float) -> list[Scored]:
    """Milvus' ``WeightedRanker(dense_weight, 1 - dense_weight)`` with its normalisation."""
    _check_weight(dense_weight)
    return _combine(
        [
            (dense_weight, milvus_normalised(dense, "COSINE")),
            (1.0 - dense_weight, milvus_normalised(bm25, "BM25")),
        ]
    )


def convex(
    dense: Ranking, bm25: Ranking, dense_weight: float, normalise: Normaliser = minmax
) -> list[Scored]:
    """``dense_weight * norm(dense) + (1 - dense_weight) * norm(bm25)``, min-max by default."""
    _check_weight(dense_weight)
    return _combine([(dense_weight, normalise(dense)), (1.0 - dense_weight, normalise(bm25))])


def dbsf(dense: Ranking, bm25: Ranking) -> list[Scored]:
    """Distribution-based score fusion: the sum of the two three-sigma normalised rankings."""
    return convex(dense, bm25, 0.5, three_sigma)


def confidence(ranking: Ranking, depth: int = 20) -> float:
    """How far the best score stands out: ``(s1 - mean) / std`` over the first ``depth``.

    A ranking whose first hit is far above the rest (an exact identifier match in BM25, a
    close paraphrase in dense) is confident; a flat profile (BM25 matching only common
    words, dense among many similar chunks) is not. 0 for fewer than two scores.
    """
    scores = [s for _, s in ranking[:depth]]
    if len(scores) < 2:
        return 0.0
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return (scores[0] - mean) / std if std > 0 else 0.0


def adaptive_weight(
    dense: Ranking, bm25: Ranking, prior: float = 0.5, depth: int = 20, sharpness: float = 1.0
) -> float:
    """The dense weight for one query: ``prior`` shifted towards the more confident list.

    ``w = prior * cd**a / (prior * cd**a + (1 - prior) * cb**a)`` with ``cd``, ``cb`` the
    two :func:`confidence` values and ``a`` the ``sharpness``; a missing or flat ranking
    hands the whole weight to the other one, two flat ones leave ``prior``.
    """
    _check_weight(prior)
    conf_dense = float(max(confidence(dense, depth), 0.0) ** sharpness)
    conf_bm25 = float(max(confidence(bm25, depth), 0.0) ** sharpness)
    total = prior * conf_dense + (1.0 - prior) * conf_bm25
    if total <= 0:
        return prior
    return prior * conf_dense / total


def adaptive(
    dense: Ranking,
    bm25: Ranking,
    prior: float = 0.5,
    depth: int = 20,
    sharpness: float = 1.0,
    normalise: Normaliser = three_sigma,
) -> list[Scored]:
    """Convex fusion of the normalised rankings with :func:`adaptive_weight` per query."""
    weight = adaptive_weight(dense, bm25, prior, depth, sharpness)
    return convex(dense, bm25, weight, normalise)
