"""``aimesh eval --fit``: the choice by hand, and a fit stored on a real collection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from aimesh_cli.eval_fit import CANDIDATES, best, fit, label
from aimesh_cli.main import main
from tests.cli.test_eval import DATASET
from tests.cli.test_ingest import gateway_url  # noqa: F401 - shared fixture
from tests.gateway.helpers import token


def metrics(mrr: float, recall: float) -> dict[str, float]:
    return {"mrr@10": mrr, "recall@5": recall}


def test_best_maximises_the_objective_then_the_other_then_comes_first() -> None:
    a, b, c = {"fusion": "adaptive"}, {"fusion": "rrf"}, {"fusion": "weighted"}
    scored = [(a, metrics(0.8, 0.9)), (b, metrics(0.9, 0.8)), (c, metrics(0.9, 0.85))]
    assert best(scored, "mrr@10") == 2  # ties on MRR, better recall
    assert best(scored, "recall@5") == 0
    # A full tie goes to the earlier candidate (adaptive, the service default, is first).
    assert best([(a, metrics(0.5, 0.5)), (b, metrics(0.5, 0.5))], "mrr@10") == 0
    with pytest.raises(ValueError, match="objective"):
        best(scored, "ndcg@10")


def test_fit_measures_every_candidate_once() -> None:
    seen: list[str] = []

    def measure(candidate: Mapping[str, Any]) -> dict[str, float]:
        seen.append(label(candidate))
        weight = candidate.get("dense_weight")
        # Best at weight 0.3 on this made-up set.
        return metrics(1.0 - abs(weight - 0.3) if weight is not None else 0.5, 0.9)

    result = fit(measure, "mrr@10")
    assert seen == [label(c) for c in CANDIDATES]
    assert len(seen) == len(set(seen)) == 11
    assert result["best"] == {"fusion": "weighted", "dense_weight": 0.3}
    assert result["objective"] == "mrr@10"


@pytest.mark.slow
async def test_fit_stores_the_best_fusion_on_the_collection(
    gateway_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = token(roles=["editor"])
    monkeypatch.setenv("AIMESH_API_KEY", key)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=gateway_url, headers=headers, timeout=60) as http:
        created = await http.post("/v1/collections", json={"name": "fit-target"})
        assert created.status_code == 201, created.text
        assert created.json()["fusion"] is None

    argv = [
        "eval",
        "--dataset",
        str(DATASET),
        "--modes",
        "hybrid",
        "--fit-collection",
        "fit-target",
        "--fit-objective",
        "recall@5",
        "--json",
        "--url",
        gateway_url,
    ]
    code = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    fitted = json.loads(captured.out)["fit"]
    assert fitted["stored_on"] == "fit-target"
    assert len(fitted["candidates"]) == len(CANDIDATES)
    winner = max(c["metrics"]["recall@5"] for c in fitted["candidates"])
    chosen = next(c for c in fitted["candidates"] if c["fusion"] == fitted["best"])
    assert chosen["metrics"]["recall@5"] == winner

    async with httpx.AsyncClient(base_url=gateway_url, headers=headers, timeout=60) as http:
        listed = (await http.get("/v1/collections")).json()["collections"]
        stored = next(c for c in listed if c["name"] == "fit-target")["fusion"]
        assert {k: v for k, v in stored.items() if v is not None} == fitted["best"]
        await http.delete("/v1/collections/fit-target")


async def test_fit_to_an_unknown_collection_fails_before_ingesting(
    gateway_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMESH_API_KEY", token(roles=["editor"]))
    argv = ["eval", "--dataset", str(DATASET), "--fit-collection", "nope", "--url", gateway_url]
    code = await asyncio.to_thread(main, argv)
    assert code == 1
    assert "collection 'nope' not found" in capsys.readouterr().err
