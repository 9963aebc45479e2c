"""``make bench-quality``'s rerank row: the real path (embedding server with a tiny
cross-encoder, retrieval server, Milvus Lite) on the committed 30-document eval set."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.bench import quality
from scripts.eval_sets import beir
from tests.embedding.cross_encoder import build_tiny_cross_encoder

SMALL_SET = quality.ROOT / "tests" / "data" / "retrieval-eval"


@pytest.mark.slow
async def test_a_rerank_model_adds_a_hybrid_rerank_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kept lists of a real run stay untouched.
    monkeypatch.setattr(quality, "KEPT", tmp_path / "kept")
    model = build_tiny_cross_encoder(tmp_path / "cross-encoder")
    results = await quality.measure([SMALL_SET], tmp_path / "data", str(model))
    [kept] = results.values()
    assert kept["rerank_model"] == "cross-encoder"
    eval_set = beir.load(SMALL_SET)
    assert set(kept["lists"]) == set(eval_set.qrels)
    for found in kept["lists"].values():
        reranked, hybrid = found["hybrid+rerank"], found["hybrid"]
        assert 0 < len(reranked) <= quality.HYBRID_TOP_K
        scores = [score for _, _, score in reranked]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= score <= 1.0 for score in scores)  # the cross-encoder's sigmoid
        # The reranker reorders the hybrid candidates (the tiny model is random, so not
        # for the better): the two lists differ for most queries.
        assert {chunk for chunk, _, _ in reranked} <= {c for c, _, _ in hybrid} | {
            c for c, _, _ in found["dense"] + found["bm25"]
        }
    differ = sum(
        [c for c, _, _ in f["hybrid+rerank"]][:5] != [c for c, _, _ in f["hybrid"]][:5]
        for f in kept["lists"].values()
    )
    assert differ > len(kept["lists"]) // 2
    section, summary = quality.render([SMALL_SET], results)
    assert "| hybrid+rerank" in section
    assert "reranked by the cross-encoder `cross-encoder`" in section
    assert "hybrid+rerank" in summary[eval_set.name]["modes"]
    assert (tmp_path / "kept" / f"{eval_set.name}.json").is_file()
