"""Retrieval quality metrics over document rankings (pure functions).

The same definitions as ``aimesh eval`` (trec_eval's, linear gain), shared by the quality
benchmark and any service that fits fusion settings on labelled queries:

* recall@k: relevant documents among the first k, divided by all relevant documents;
* MRR@k: 1 / rank of the first relevant document within k (0 when none);
* nDCG@k: sum of grade / log2(rank + 1) over the first k, divided by the same sum for the
  ideal order.

Search returns chunks; a document's rank is that of its best chunk
(:func:`documents_in_order`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
Qrels = Mapping[str, Mapping[str, int]]


def recall_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {doc for doc, grade in relevant.items() if grade > 0}
    if not wanted:
        return 0.0
    return len(wanted & set(ranking[:k])) / len(wanted)


def mrr_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    for rank, doc in enumerate(ranking[:k], start=1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    dcg = sum(
        relevant.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranking[:k], start=1)
    )
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal, start=1))
    return dcg / idcg if idcg else 0.0


def query_metrics(ranking: Sequence[str], relevant: Mapping[str, int]) -> dict[str, float]:
    return {
        "recall@1": recall_at(ranking, relevant, 1),
        "recall@5": recall_at(ranking, relevant, 5),
        "recall@10": recall_at(ranking, relevant, 10),
        "mrr@10": mrr_at(ranking, relevant),
        "ndcg@10": ndcg_at(ranking, relevant),
    }


def evaluate(rankings: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Mean of each metric over the queries of ``qrels`` with a relevant document."""
    queries = [q for q, rel in qrels.items() if any(g > 0 for g in rel.values())]
    if not queries:
        raise ValueError("qrels name no relevant document")
    totals = dict.fromkeys(METRICS, 0.0)
    for query in queries:
        for name, value in query_metrics(rankings.get(query, []), qrels[query]).items():
            totals[name] += value
    return {name: value / len(queries) for name, value in totals.items()}


def documents_in_order(chunk_document_ids: Sequence[str]) -> list[str]:
    """Document ids in the order of their best chunk."""
    return list(dict.fromkeys(chunk_document_ids))
