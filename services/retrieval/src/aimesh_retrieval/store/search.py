"""One function per search kind (dense, BM25, hybrid), the fusion of the hybrid one, and
the mapping of Milvus results to hits (with the MMR re-ranking).

Each search function is a blocking call of the client, run by ``MilvusStore`` in its thread
pool. Hybrid search with Milvus' rankers (``weighted``, ``rrf``) passes the filter in EACH
``AnnSearchRequest``: a top-level ``filter`` of ``hybrid_search`` is silently ignored by
pymilvus + Milvus Lite (a tenant leak). ``adaptive`` fusion runs the dense and the BM25
search of the same plan (each with the plan's filter) and fuses them here, with
:func:`aimesh_retrieval.fusion.adaptive`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pymilvus import AnnSearchRequest, MilvusClient, RRFRanker, WeightedRanker
from pymilvus.client.abstract import BaseRanker

from aimesh_retrieval import fusion
from aimesh_retrieval.store.model import CollectionMeta, Hit, SearchMode, SearchOptions

RRF_K = 60
# Candidates per ranking of adaptive fusion: at least this many, at most ADAPTIVE_MAX.
ADAPTIVE_MIN = 50
ADAPTIVE_MAX = 300
# Fields every hit reads; MMR also needs the vectors.
HIT_FIELDS = ("document_id", "chunk_index", "text", "metadata")
# And in collections with chunk context (``text`` starts with the header until body_start).
CONTEXT_FIELDS = ("body_start", "title", "section")

# The raw answer of a Milvus search: one list of results per query vector.
Results = list[list[dict[str, Any]]]


@dataclass(frozen=True)
class SearchPlan:
    """One search, ready to send: where, what, how many, and with which parameters."""

    collection: str
    vector: Sequence[float]
    query: str
    expr: str
    top_k: int
    # Results asked of Milvus: top_k, or more candidates for MMR to choose from.
    limit: int
    output_fields: list[str]
    dense_params: dict[str, Any]
    consistency: str
    options: SearchOptions


def plan_search(
    collection: str,
    meta: CollectionMeta,
    vector: Sequence[float],
    query: str,
    top_k: int,
    expr: str,
    options: SearchOptions,
    *,
    search_ef: int,
    consistency: str,
) -> SearchPlan:
    """The plan of a search of ``collection``, sized and parametrized for its index."""
    # MMR picks among more candidates than it returns, comparing their vectors.
    limit = min(max(top_k * 4, 20), 200) if options.mmr else top_k
    fields = [*HIT_FIELDS, *(CONTEXT_FIELDS if meta.context else ())]
    if options.mmr:
        fields.append("embedding")
    dense_params: dict[str, Any] = {"metric_type": "COSINE"}
    if meta.index.index_type == "HNSW":
        dense_params["params"] = {"ef": max(search_ef, limit)}
    return SearchPlan(
        collection=collection,
        vector=vector,
        query=query,
        expr=expr,
        top_k=top_k,
        limit=limit,
        output_fields=fields,
        dense_params=dense_params,
        consistency=consistency,
        options=options,
    )


def search_dense(client: MilvusClient, plan: SearchPlan, *, timeout: float) -> Results:
    """Nearest neighbours of the query vector by cosine similarity."""
    return _search_field(client, plan, "embedding", list(plan.vector), plan.dense_params, timeout)


def search_bm25(client: MilvusClient, plan: SearchPlan, *, timeout: float) -> Results:
    """Full-text search: BM25 over the analyzed text."""
    return _search_field(client, plan, "sparse", plan.query, {"metric_type": "BM25"}, timeout)


def _search_field(
    client: MilvusClient,
    plan: SearchPlan,
    field: str,
    query: object,
    params: dict[str, Any],
    timeout: float,
) -> Results:
    """A search of one vector field (``query`` is a vector, or text for a BM25 field)."""
    results: Results = client.search(
        plan.collection,
        data=[query],
        filter=plan.expr,
        limit=plan.limit,
        output_fields=plan.output_fields,
        search_params=params,
        anns_field=field,
        consistency_level=plan.consistency,
        timeout=timeout,
    )
    return results


def search_hybrid(client: MilvusClient, plan: SearchPlan, *, timeout: float) -> Results:
    """Dense and BM25 candidates fused as ``plan.options.fusion`` says: ``adaptive`` here,
    the others by Milvus' ranker in one ``hybrid_search``."""
    if plan.options.fusion == "adaptive":
        return search_adaptive(client, plan, timeout=timeout)
    results: Results = client.hybrid_search(
        plan.collection,
        hybrid_requests(plan),
        fusion_ranker(plan.options),
        limit=plan.limit,
        output_fields=plan.output_fields,
        consistency_level=plan.consistency,
        timeout=timeout,
    )
    return results


def search_adaptive(client: MilvusClient, plan: SearchPlan, *, timeout: float) -> Results:
    """The dense and the BM25 search of ``plan`` (each with its filter), fused per query."""
    candidates = adaptive_plan(plan)
    dense = search_dense(client, candidates, timeout=timeout)
    bm25 = search_bm25(client, candidates, timeout=timeout)
    return fuse_adaptive(dense, bm25, plan.limit)


def adaptive_plan(plan: SearchPlan) -> SearchPlan:
    """``plan`` asking each ranking for enough candidates to fuse (HNSW ``ef`` to match)."""
    limit = min(max(plan.limit * 4, ADAPTIVE_MIN), ADAPTIVE_MAX)
    params = dict(plan.dense_params)
    if "params" in params:
        params["params"] = {**params["params"], "ef": max(params["params"]["ef"], limit)}
    return replace(plan, limit=limit, dense_params=params)


def fuse_adaptive(dense: Results, bm25: Results, limit: int) -> Results:
    """The first ``limit`` rows of :func:`fusion.adaptive` over the two answers, min-max
    normalised, each row carrying its fused score as its ``distance``."""
    dense_rows = dense[0] if dense else []
    bm25_rows = bm25[0] if bm25 else []
    rows: dict[str, dict[str, Any]] = {}
    for row in [*dense_rows, *bm25_rows]:
        rows.setdefault(str(row["id"]), row)
    fused = fusion.adaptive(
        [(str(row["id"]), float(row["distance"])) for row in dense_rows],
        # Milvus Lite reports BM25 scores negated; the server, positive.
        [(str(row["id"]), abs(float(row["distance"]))) for row in bm25_rows],
        normalise=fusion.minmax,
    )
    return [[{**rows[key], "distance": score} for key, score in fused[:limit]]]


SEARCHES: dict[SearchMode, Callable[..., Results]] = {
    "dense": search_dense,
    "bm25": search_bm25,
    "hybrid": search_hybrid,
}


def hybrid_requests(plan: SearchPlan) -> list[AnnSearchRequest]:
    """The dense and the BM25 request of a hybrid search, each carrying the filter."""
    # Candidates per ranking: fusion needs more than the final top_k of each.
    candidates = min(max(plan.limit * 3, 30), 300)
    # The filter goes into EACH request: hybrid_search ignores a top-level one.
    expr = plan.expr or None
    return [
        AnnSearchRequest(
            data=[list(plan.vector)],
            anns_field="embedding",
            param=plan.dense_params,
            limit=candidates,
            expr=expr,
        ),
        AnnSearchRequest(
            data=[plan.query],
            anns_field="sparse",
            param={"metric_type": "BM25"},
            limit=candidates,
            expr=expr,
        ),
    ]


def fusion_ranker(options: SearchOptions) -> BaseRanker:
    """The Milvus ranker of a hybrid search fusing in Milvus: ``weighted`` mixes the
    scores (``dense_weight`` for the dense one); ``rrf`` sums reciprocal ranks (k = 60).
    (``adaptive`` fusion runs in :func:`search_adaptive` instead.)"""
    if options.fusion == "weighted":
        return WeightedRanker(options.dense_weight, 1.0 - options.dense_weight)
    return RRFRanker(RRF_K)


def to_hits(results: Results, plan: SearchPlan) -> list[Hit]:
    """The ``top_k`` hits of a search, best first (in MMR order when asked)."""
    rows = results[0] if results else []
    hits = [_hit(row, plan.options.mode) for row in rows]
    if plan.options.mmr:
        vectors = [[float(x) for x in row["entity"]["embedding"]] for row in rows]
        order = mmr_select(plan.vector, vectors, plan.top_k, plan.options.mmr_lambda)
        hits = [hits[i] for i in order]
    return hits[: plan.top_k]


def _hit(row: dict[str, Any], mode: SearchMode) -> Hit:
    entity = row["entity"]
    distance = float(row["distance"])
    # With chunk context the stored text starts with "title > section\n\n": the hit's
    # text is the chunk's own, so quotes and citations never show the header as body.
    body_start = int(entity.get("body_start") or 0)
    return Hit(
        document_id=entity["document_id"],
        chunk_id=str(row["id"]),
        chunk_index=int(entity["chunk_index"]),
        text=entity["text"][body_start:],
        title=entity.get("title") or "",
        section=entity.get("section") or "",
        # Milvus Lite reports BM25 scores negated (as distances); show them as the
        # positive, higher-is-better scores a server returns.
        score=abs(distance) if mode == "bm25" else distance,
        metadata=entity.get("metadata") or {},
    )


def mmr_select(
    query: Sequence[float], candidates: Sequence[Sequence[float]], k: int, lam: float
) -> list[int]:
    """Maximal marginal relevance: indices of ``k`` candidates, most useful first.

    Each step takes the candidate maximizing ``lam * sim(query, c) - (1 - lam) *
    max(sim(c, chosen))`` with cosine similarity, trading relevance for novelty.
    """

    def cosine(a: Sequence[float], b: Sequence[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        return dot / norm if norm else 0.0

    relevance = [cosine(query, c) for c in candidates]
    chosen: list[int] = []
    redundancy = [-math.inf] * len(candidates)
    while len(chosen) < min(k, len(candidates)):
        best, best_score = -1, -math.inf
        for i in range(len(candidates)):
            if i in chosen:
                continue
            penalty = redundancy[i] if chosen else 0.0
            score = lam * relevance[i] - (1.0 - lam) * penalty
            if score > best_score:
                best, best_score = i, score
        chosen.append(best)
        for i in range(len(candidates)):
            redundancy[i] = max(redundancy[i], cosine(candidates[i], candidates[best]))
    return chosen
