"""``aimesh eval``: the metrics' arithmetic by hand, and a run on tests/data/retrieval-eval."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from aimesh_cli.eval import (
    EvalError,
    documents_in_order,
    evaluate,
    load_dataset,
    mrr_at,
    ndcg_at,
    recall_at,
)
from aimesh_cli.main import main
from tests.cli.test_ingest import gateway_url  # noqa: F401 - shared fixture
from tests.gateway.helpers import token

DATASET = Path(__file__).parents[1] / "data" / "retrieval-eval"


def test_recall_by_hand() -> None:
    relevant = {"a": 1, "b": 1, "z": 0}
    ranking = ["x", "a", "y", "b"]
    assert recall_at(ranking, relevant, 1) == 0.0
    assert recall_at(ranking, relevant, 2) == 0.5  # a of {a, b}
    assert recall_at(ranking, relevant, 4) == 1.0
    assert recall_at(["z"], relevant, 1) == 0.0  # grade 0 is not relevant


def test_mrr_by_hand() -> None:
    assert mrr_at(["x", "y", "a"], {"a": 1}) == pytest.approx(1 / 3)
    assert mrr_at(["a"], {"a": 1}) == 1.0
    assert mrr_at(["x"] * 10 + ["a"], {"a": 1}) == 0.0  # rank 11 is outside @10


def test_ndcg_by_hand() -> None:
    # Grades a=2, b=1; ranking b, x, a.
    # DCG = 1/log2(2) + 0 + 2/log2(4) = 1 + 1 = 2
    # IDCG = 2/log2(2) + 1/log2(3) = 2 + 0.63093 = 2.63093
    value = ndcg_at(["b", "x", "a"], {"a": 2, "b": 1})
    assert value == pytest.approx(2 / (2 + 1 / math.log2(3)))
    assert value == pytest.approx(0.760188, abs=1e-6)
    assert ndcg_at(["a", "b"], {"a": 2, "b": 1}) == pytest.approx(1.0)
    assert ndcg_at(["x"], {"a": 1}) == 0.0


def test_evaluate_averages_over_queries_with_relevant_documents() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    metrics = evaluate({"q1": ["a"], "q2": ["x", "b"]}, qrels)
    # q3 has no relevant document and is left out: means over q1 and q2.
    assert metrics["recall@1"] == 0.5
    assert metrics["recall@5"] == 1.0
    assert metrics["mrr@10"] == pytest.approx((1 + 0.5) / 2)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    with pytest.raises(EvalError):
        evaluate({}, {"q": {"a": 0}})


def test_documents_rank_by_their_best_chunk() -> None:
    assert documents_in_order(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_dataset_loads(tmp_path: Path) -> None:
    dataset = load_dataset(DATASET)
    assert len(dataset.corpus) == 30
    assert len(dataset.queries) == 30
    assert dataset.qrels["q23"] == {"d11": 2, "d30": 1}
    assert set(dataset.qrels) == set(dataset.queries)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d"}\nnot json\n')
    with pytest.raises(EvalError, match=r"corpus.jsonl:2: not JSON"):
        load_dataset(tmp_path)


async def test_eval_on_the_shipped_dataset(
    gateway_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMESH_API_KEY", token(roles=["editor"]))
    argv = ["eval", "--dataset", str(DATASET), "--json", "--url", gateway_url]
    code = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    report = json.loads(out)
    metrics = report["metrics"]
    assert report["queries"] == 30
    for mode in ("dense", "bm25", "hybrid"):
        assert 0.0 <= metrics[mode]["ndcg@10"] <= 1.0
        assert metrics[mode]["recall@1"] <= metrics[mode]["recall@5"] <= metrics[mode]["recall@10"]
    # The service's default hybrid fusion keeps up with the better single mode: recall@5
    # within 0.01 (issue 16's target). Adaptive fusion, the default chosen by its worst case
    # over five sets, gives up one first place on this 30-query set (0.017 MRR@10 below
    # dense, as make bench-quality measured offline), hence 0.02 for the rank-aware metrics.
    for metric, tolerance in (("recall@5", 0.01), ("ndcg@10", 0.02), ("mrr@10", 0.02)):
        best = max(metrics["dense"][metric], metrics["bm25"][metric])
        assert metrics["hybrid"][metric] >= best - tolerance, (metric, metrics)
