"""The search kinds' requests, the hybrid fusion and the mapping of results to hits,
checked without Milvus (every kind runs on Milvus in test_milvus and test_collections)."""

from __future__ import annotations

from typing import Any

import pytest
from pymilvus import RRFRanker, WeightedRanker

from aimesh_retrieval import fusion
from aimesh_retrieval.store.model import CollectionMeta, IndexConfig, SearchOptions
from aimesh_retrieval.store.search import (
    ADAPTIVE_MAX,
    ADAPTIVE_MIN,
    RRF_K,
    SEARCHES,
    fusion_ranker,
    hybrid_requests,
    mmr_select,
    plan_search,
    search_bm25,
    search_dense,
    search_hybrid,
    to_hits,
)

FLAT = CollectionMeta("docs", 2, None, IndexConfig("FLAT"), full_text=True)
HNSW = CollectionMeta("docs", 2, None, IndexConfig("HNSW"), full_text=True)
TENANT_FILTER = 'metadata["lang"] == "en"'


def plan(top_k: int = 5, expr: str = TENANT_FILTER, meta: CollectionMeta = FLAT, **options: Any):
    return plan_search(
        "a_x_y",
        meta,
        [1.0, 0.0],
        "volcano",
        top_k,
        expr,
        SearchOptions(**options),
        search_ef=64,
        consistency="Session",
    )


def test_each_mode_has_its_search() -> None:
    assert {"dense": search_dense, "bm25": search_bm25, "hybrid": search_hybrid} == SEARCHES


def test_plan_sizes_mmr_candidates_and_hnsw_ef() -> None:
    plain = plan(top_k=5)
    assert (plain.limit, plain.dense_params) == (5, {"metric_type": "COSINE"})
    assert "embedding" not in plain.output_fields
    mmr = plan(top_k=5, mmr=True)
    assert mmr.limit == 20
    assert "embedding" in mmr.output_fields
    assert plan(top_k=100, mmr=True).limit == 200
    assert plan(top_k=5, meta=HNSW).dense_params == {"metric_type": "COSINE", "params": {"ef": 64}}
    assert plan(top_k=100, meta=HNSW).dense_params["params"] == {"ef": 100}


def test_hybrid_requests_each_carry_the_filter() -> None:
    # hybrid_search ignores a top-level filter: a filter left out of a request would let
    # that ranking return other documents (the tenant-leak trap).
    dense, bm25 = hybrid_requests(plan(top_k=5, mode="hybrid"))
    assert (dense.anns_field, bm25.anns_field) == ("embedding", "sparse")
    assert dense.expr == bm25.expr == TENANT_FILTER
    assert dense.limit == bm25.limit == 30
    assert dense.data == [[1.0, 0.0]]
    assert bm25.data == ["volcano"]
    assert bm25.param == {"metric_type": "BM25"}
    unfiltered = hybrid_requests(plan(top_k=50, expr="", mode="hybrid"))
    assert [request.expr for request in unfiltered] == [None, None]
    assert unfiltered[0].limit == 150


def test_fusion_ranker_follows_the_setting() -> None:
    rrf = fusion_ranker(SearchOptions(mode="hybrid"))
    assert isinstance(rrf, RRFRanker)
    assert rrf.dict()["params"] == {"k": RRF_K}
    weighted = fusion_ranker(SearchOptions(mode="hybrid", fusion="weighted", dense_weight=0.8))
    assert isinstance(weighted, WeightedRanker)
    assert weighted.dict()["params"]["weights"] == pytest.approx([0.8, 0.2])


def row(document: str, distance: float, vector: list[float] | None = None) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "document_id": document,
        "chunk_index": 0,
        "text": f"{document} text",
        "metadata": None,
    }
    if vector is not None:
        entity["embedding"] = vector
    return {"id": f"{document}#0", "distance": distance, "entity": entity}


def test_to_hits_maps_rows_and_makes_bm25_scores_positive() -> None:
    results = [[row("a", -3.5), row("b", -1.25)]]
    bm25 = to_hits(results, plan(mode="bm25"))
    assert [(hit.document_id, hit.chunk_id, hit.score) for hit in bm25] == [
        ("a", "a#0", 3.5),
        ("b", "b#0", 1.25),
    ]
    assert bm25[0].metadata == {}
    assert bm25[0].text == "a text"
    dense = to_hits([[row("a", 0.9), row("b", -0.1)]], plan(top_k=1))
    assert [(hit.document_id, hit.score) for hit in dense] == [("a", 0.9)]
    assert to_hits([], plan()) == []


def test_to_hits_reorders_by_mmr_and_cuts_to_top_k() -> None:
    results = [
        [
            row("near", 0.99, [1.0, 0.0]),
            row("twin", 0.98, [0.99, 0.14]),
            row("other", 0.6, [0.6, 0.8]),
        ]
    ]
    hits = to_hits(results, plan(top_k=2, mmr=True, mmr_lambda=0.3))
    assert [hit.document_id for hit in hits] == ["near", "other"]


def test_mmr_select_by_hand() -> None:
    query = [1.0, 0.0]
    candidates = [[1.0, 0.0], [0.99, 0.14], [0.6, 0.8]]
    # Pure relevance keeps the similarity order.
    assert mmr_select(query, candidates, 3, 1.0) == [0, 1, 2]
    # lambda 0.5: after [0], candidate 1 scores 0.5*0.990 - 0.5*0.990 = 0, candidate 2
    # scores 0.5*0.6 - 0.5*0.6 = 0 ... tie broken by first; lambda 0.3 favours novelty.
    assert mmr_select(query, candidates, 2, 0.3) == [0, 2]
    assert mmr_select(query, candidates, 5, 0.5)[:1] == [0]
    assert mmr_select(query, [], 3, 0.5) == []


class FakeClient:
    """A MilvusClient answering ``search`` from canned rows per field, recording each call."""

    def __init__(self, answers: dict[str, list[dict[str, Any]]]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []

    def search(self, collection: str, **kwargs: Any) -> list[list[dict[str, Any]]]:
        self.calls.append({"collection": collection, **kwargs})
        return [self.answers[kwargs["anns_field"]][: kwargs["limit"]]]

    def hybrid_search(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("adaptive fusion must not use hybrid_search")


# Dense: "a" stands out; BM25 (negated, as Milvus Lite reports it): "c" stands out.
DENSE_ROWS = [row("a", 0.9, [1.0, 0.0]), row("b", 0.5, [0.9, 0.1]), row("c", 0.45, [0.0, 1.0])]
BM25_ROWS = [row("c", -12.0, [0.0, 1.0]), row("d", -2.0, [0.7, 0.7]), row("b", -1.5, [0.9, 0.1])]


def test_adaptive_runs_both_searches_with_the_filter_and_enough_candidates() -> None:
    client = FakeClient({"embedding": DENSE_ROWS, "sparse": BM25_ROWS})
    search_hybrid(client, plan(top_k=5, meta=HNSW, mode="hybrid", fusion="adaptive"), timeout=3)
    dense, bm25 = client.calls
    assert (dense["anns_field"], bm25["anns_field"]) == ("embedding", "sparse")
    # Each search carries the tenant/metadata filter itself (no hybrid_search involved).
    assert dense["filter"] == bm25["filter"] == TENANT_FILTER
    assert dense["limit"] == bm25["limit"] == ADAPTIVE_MIN
    # HNSW's ef (64 here) never below the candidates asked for.
    assert dense["search_params"] == {"metric_type": "COSINE", "params": {"ef": 64}}
    assert bm25["search_params"] == {"metric_type": "BM25"}
    assert dense["data"] == [[1.0, 0.0]]
    assert bm25["data"] == ["volcano"]
    client.calls.clear()
    search_hybrid(client, plan(top_k=20, meta=HNSW, mode="hybrid", fusion="adaptive"), timeout=3)
    assert [call["limit"] for call in client.calls] == [80, 80]
    assert client.calls[0]["search_params"]["params"] == {"ef": 80}
    client.calls.clear()
    search_hybrid(client, plan(top_k=200, mode="hybrid", fusion="adaptive"), timeout=3)
    assert [call["limit"] for call in client.calls] == [ADAPTIVE_MAX, ADAPTIVE_MAX]


def test_adaptive_returns_the_fused_order_and_score_cut_to_top_k() -> None:
    client = FakeClient({"embedding": DENSE_ROWS, "sparse": BM25_ROWS})
    searched = plan(top_k=2, mode="hybrid", fusion="adaptive")
    hits = to_hits(search_hybrid(client, searched, timeout=3), searched)
    expected = fusion.adaptive(
        [("a#0", 0.9), ("b#0", 0.5), ("c#0", 0.45)],
        [("c#0", 12.0), ("d#0", 2.0), ("b#0", 1.5)],
        normalise=fusion.minmax,
    )[:2]
    assert [(hit.chunk_id, hit.score) for hit in hits] == expected
    assert hits[0].document_id == "c"  # BM25's confident top hit wins this query
    assert {hit.text for hit in hits} == {"c text", "a text"}


def test_adaptive_with_one_empty_ranking_keeps_the_other() -> None:
    client = FakeClient({"embedding": DENSE_ROWS, "sparse": []})
    searched = plan(top_k=3, mode="hybrid", fusion="adaptive")
    hits = to_hits(search_hybrid(client, searched, timeout=3), searched)
    assert [hit.document_id for hit in hits] == ["a", "b", "c"]


def test_adaptive_candidates_are_reranked_by_mmr() -> None:
    client = FakeClient({"embedding": DENSE_ROWS, "sparse": BM25_ROWS})
    searched = plan(top_k=2, mode="hybrid", fusion="adaptive", mmr=True, mmr_lambda=0.3)
    assert "embedding" in searched.output_fields
    hits = to_hits(search_hybrid(client, searched, timeout=3), searched)
    # MMR picks among the fused candidates by their vectors: the closest to the query
    # first ("a"), then the most novel one ("c", orthogonal to "a").
    assert [hit.document_id for hit in hits] == ["a", "c"]
