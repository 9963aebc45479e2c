"""``aimesh eval --fit``: choose a collection's hybrid fusion on labelled queries.

Every candidate of ``CANDIDATES`` (adaptive, RRF, and weighted fusion with dense weights
0.1 to 0.9) runs every query as a hybrid search of the evaluation collection (30 chunks,
as the other modes); the candidate with the best objective wins (``mrr@10`` by default, or
``recall@5``; ties go to the other of the two, then to the earlier candidate, so the
service's default ``adaptive`` wins a tie). With ``--fit-collection C`` the winner is
stored as collection C's default fusion (``PATCH /v1/collections/C``), which its searches
use whenever they name no fusion.

The fit is only as good as the queries: it measures the dataset's corpus, so that corpus
must stand for the collection's documents, and with few queries the differences between
candidates are within noise (each query moves MRR by up to 1 / queries).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

OBJECTIVES = ("mrr@10", "recall@5")
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CANDIDATES: tuple[dict[str, Any], ...] = (
    {"fusion": "adaptive"},
    {"fusion": "rrf"},
    *({"fusion": "weighted", "dense_weight": weight} for weight in WEIGHTS),
)


def label(candidate: Mapping[str, Any]) -> str:
    """``weighted 0.7``, ``rrf``, ..."""
    if candidate.get("dense_weight") is not None:
        return f"{candidate['fusion']} {candidate['dense_weight']:g}"
    return str(candidate["fusion"])


def best(scored: Sequence[tuple[Mapping[str, Any], Mapping[str, float]]], objective: str) -> int:
    """The index of the winning candidate among ``(candidate, metrics)`` pairs: the highest
    ``objective``, then the highest other objective, then the earliest."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}")
    other = next(name for name in OBJECTIVES if name != objective)
    return max(
        range(len(scored)),
        key=lambda i: (
            round(scored[i][1][objective], 9),
            round(scored[i][1][other], 9),
            -i,
        ),
    )


def fit(
    measure: Callable[[Mapping[str, Any]], Mapping[str, float]], objective: str
) -> dict[str, Any]:
    """Measure every candidate with ``measure`` (its hybrid metrics) and pick the best."""
    scored = [(candidate, dict(measure(candidate))) for candidate in CANDIDATES]
    winner = best(scored, objective)
    return {
        "objective": objective,
        "best": dict(scored[winner][0]),
        "candidates": [
            {"fusion": dict(candidate), "label": label(candidate), "metrics": metrics}
            for candidate, metrics in scored
        ],
    }
