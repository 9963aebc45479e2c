"""``aimesh eval --qa``: the QA figures' arithmetic by hand, and a run comparing aliases on
tests/data/retrieval-eval through a live gateway, the real router, retrieval and embedding
services (gRPC on real ports). ``default`` is the local extractive provider, ``hosted`` an
OpenAI-protocol HTTP server standing in for a hosted LLM (priced, so cost is non-zero), and
``broken`` an OpenAI alias whose upstream port is closed (every call fails)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from io import StringIO
from pathlib import Path

import pytest
import uvicorn
import yaml
from rich.console import Console

from aimesh_cli.eval_qa import (
    AskOutcome,
    citation_hit_rate,
    citation_precision,
    is_answered,
    outcome_from_reply,
    percentile,
    print_qa_table,
    summarize,
)
from aimesh_cli.main import main
from aimesh_gateway.main import create_app
from aimesh_llm_router.config import Settings as RouterSettings
from aimesh_llm_router.server import build_dependencies
from aimesh_llm_router.server import create_server as create_router
from aimesh_retrieval.config import Settings as RetrievalSettings
from aimesh_retrieval.jobs import JobStore
from aimesh_retrieval.store import MilvusStore
from tests.conftest import free_port
from tests.gateway.helpers import settings_for, token
from tests.llm_router.openai_server import FakeOpenAI, Reply
from tests.retrieval.conftest import serve

DATASET = Path(__file__).parents[1] / "data" / "retrieval-eval"
HOSTED_ANSWER = "The first source answers this [1]."
ASKED = 6


def test_is_answered() -> None:
    assert is_answered("Paris is the capital [1].")
    assert not is_answered("I don't know: the sources do not answer this question.")
    assert not is_answered("  i don\u2019t know.")
    assert not is_answered("I do not know.")
    assert not is_answered("   ")


def test_citation_hit_rate_by_hand() -> None:
    qrels = [{"a": 1}, {"b": 1, "c": 0}, {"d": 2}, {"e": 1}]
    cited = [["x", "a"], ["c"], [], ["e", "e"]]
    # Reply 1 cites a (hit); reply 2 cites only c, graded 0 (miss); reply 3 cites nothing
    # (miss); reply 4 cites e (hit): 2 of 4.
    assert citation_hit_rate(cited, qrels) == 0.5
    assert citation_hit_rate([], []) == 0.0
    with pytest.raises(ValueError, match="one relevance"):
        citation_hit_rate([["a"]], [])


def test_citation_precision_by_hand() -> None:
    qrels = [{"a": 1}, {"b": 1, "c": 0}, {"d": 2}, {"e": 1}]
    cited = [["x", "a"], ["c"], [], ["e", "e"]]
    # Citations: x, a, c, e, e = 5; relevant to their own question: a, e, e = 3.
    assert citation_precision(cited, qrels) == pytest.approx(3 / 5)
    # A document relevant to another question does not count.
    assert citation_precision([["a"], ["a"]], [{"a": 1}, {"b": 1}]) == 0.5
    assert citation_precision([[], []], [{"a": 1}, {"b": 1}]) is None


def test_percentile_nearest_rank_by_hand() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0  # ceil(0.5 * 4) = 2nd smallest
    assert percentile([4.0, 1.0, 3.0, 2.0], 95) == 4.0  # ceil(0.95 * 4) = 4th
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 95) == 19.0  # ceil(0.95 * 20) = 19th
    assert percentile(values, 50) == 10.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 0)


def test_summarize_by_hand() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}, "q4": {"d": 1}}
    outcomes = [
        AskOutcome("q1", 100.0, True, ("a", "z"), 10, 4, cost_usd=0.001, served_by="fast"),
        AskOutcome("q2", 300.0, True, ("z",), 20, 6, cost_usd=0.002, served_by="fast"),
        AskOutcome("q3", 200.0, False, (), 30, 2, True, 0.0, served_by="default"),
        AskOutcome("q4", error="HTTP 503: upstream down"),
    ]
    report = summarize("fast", outcomes, qrels)
    assert (report.asked, report.replies, report.answered, report.errors) == (4, 3, 2, 1)
    assert report.citation_hit_rate == pytest.approx(1 / 3)  # only q1 of 3 replies
    assert report.citation_precision == pytest.approx(1 / 3)  # a of a, z, z
    assert report.citations == 3
    assert report.latency_p50_ms == 200.0  # errors have no latency: 100, 200, 300
    assert report.latency_p95_ms == 300.0
    assert (report.prompt_tokens, report.completion_tokens) == (60, 12)
    assert report.prompt_tokens_mean == 20.0
    assert report.completion_tokens_mean == 4.0
    assert report.estimated_tokens == 1
    assert report.cost_usd == pytest.approx(0.003)
    assert report.served_by == {"fast": 2, "default": 1}
    assert report.first_error == "HTTP 503: upstream down"
    # Cost unknown for one reply: the total is unknown, not a partial sum.
    unpriced = summarize("x", [AskOutcome("q1", 1.0), AskOutcome("q2", 1.0, cost_usd=1.0)], qrels)
    assert unpriced.cost_usd is None
    failed = summarize("broken", [AskOutcome("q1", error="boom")] * 2, qrels)
    assert failed.citation_hit_rate is None
    assert failed.latency_p50_ms is None
    assert failed.cost_usd is None
    assert failed.errors == 2


def test_outcome_maps_citations_to_corpus_ids() -> None:
    body = {
        "answer": "Yes [1][2].",
        "citations": [
            {"document_id": "chunked-doc", "metadata": {"corpus_id": "d07"}},
            {"document_id": "d09", "metadata": {}},
        ],
        "model": "default",
        "provider": "local",
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "estimated": True},
    }
    outcome = outcome_from_reply("q1", 42.0, body)
    assert outcome.cited_documents == ("d07", "d09")
    assert outcome.answered
    assert outcome.cost_usd is None  # a gateway without usage.cost_usd
    assert outcome.estimated_tokens
    assert (outcome.served_by, outcome.provider) == ("default", "local")
    bad = outcome_from_reply("q1", 1.0, {"answer": "x"})
    assert bad.error is not None
    assert bad.error.startswith("unexpected reply")


def test_table_shows_aliases_side_by_side() -> None:
    qrels = {"q1": {"a": 1}}
    reports = [
        summarize("default", [AskOutcome("q1", 12.0, True, ("a",), 5, 2, cost_usd=0.0)], qrels),
        summarize("broken", [AskOutcome("q1", error="HTTP 503: [b]down[/b]")], qrels),
    ]
    out = StringIO()
    print_qa_table(reports, Console(file=out, width=100, color_system=None))
    text = out.getvalue()
    header = next(line for line in text.splitlines() if "metric" in line)
    assert header.index("default") < header.index("broken")
    hit_row = next(line for line in text.splitlines() if "citation hit rate" in line)
    assert "1.000" in hit_row
    assert "n/a" in hit_row
    assert "broken: 1 of 1 failed; first error: HTTP 503: [b]down[/b]" in text


@pytest.fixture(scope="module")
async def hosted_llm() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def qa_gateway_url(
    embedding_addr: str, hosted_llm: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    data = tmp_path_factory.mktemp("cli-eval-qa")
    key_file = data / "hosted-key"
    key_file.write_text("sk-test-eval-key\n")
    models = {
        "models": {
            "default": {"provider": "local", "description": "extractive"},
            "hosted": {
                "provider": "openai",
                "model": "test-model",
                "base_url": hosted_llm.base_url,
                "api_key_file": str(key_file),
                "max_retries": 0,
                "timeout_seconds": 10,
                "context_window": 8192,
                "price_per_1k_input": 0.15,
                "price_per_1k_output": 0.6,
            },
            "broken": {
                "provider": "openai",
                "model": "test-model",
                "base_url": f"http://127.0.0.1:{free_port()}/v1",
                "api_key_file": str(key_file),
                "max_retries": 0,
                "timeout_seconds": 2,
            },
        }
    }
    models_file = data / "models.yaml"
    models_file.write_text(yaml.safe_dump(models))
    store = MilvusStore.open(RetrievalSettings(data_dir=data))
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{data / 'jobs.db'}")
    async for retrieval in serve(store, embedding_addr, jobs):
        router_settings = RouterSettings(
            port=0,
            host="127.0.0.1",
            metrics_port=None,
            data_dir=data,
            models_file=models_file,
            retrieval_service_addr=retrieval.address,
            embedding_service_addr=embedding_addr,
        )
        router = create_router(router_settings, build_dependencies(router_settings))
        await router.start()
        port = free_port()
        app = create_app(
            settings_for(
                router_addr=f"127.0.0.1:{router.port}",
                retrieval_addr=retrieval.address,
                embedding_addr=embedding_addr,
                request_timeout_seconds=30.0,
            )
        )
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
        )
        task = asyncio.create_task(server.serve())
        for _ in range(200):
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        assert server.started
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        await router.stop(0)
    await jobs.close()
    await store.close()


async def test_eval_qa_compares_aliases_on_the_shipped_dataset(
    qa_gateway_url: str,
    hosted_llm: FakeOpenAI,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMESH_API_KEY", token(roles=["editor"]))
    hosted_llm.enqueue(*(Reply(content=HOSTED_ANSWER) for _ in range(ASKED)))
    # The first ASKED queries only: the local provider embeds every source sentence, which
    # takes seconds per question on a busy machine.
    argv = [
        "eval", "--dataset", str(DATASET), "--qa", "--models", "default,hosted,broken",
        "--limit", str(ASKED), "--modes", "none", "--json", "--url", qa_gateway_url,
    ]  # fmt: skip
    code = await asyncio.to_thread(main, argv)
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads(out)
    assert report["metrics"] == {}
    assert report["qa"]["questions"] == ASKED
    qa = report["qa"]["models"]
    assert list(qa) == ["default", "hosted", "broken"]
    for alias in ("default", "hosted"):
        figures = qa[alias]
        assert figures["asked"] == figures["replies"] == ASKED, figures
        assert figures["errors"] == 0
        assert 0.0 < figures["citation_hit_rate"] <= 1.0
        assert 0.0 < figures["citation_precision"] <= 1.0
        assert 0 < figures["latency_p50_ms"] <= figures["latency_p95_ms"] < 30_000
        assert figures["prompt_tokens"] > 0
        assert figures["prompt_tokens_mean"] == pytest.approx(figures["prompt_tokens"] / ASKED)
        assert figures["served_by"] == {alias: ASKED}
    # The extractive provider quotes and cites only sentences close to the question.
    assert 0 < qa["default"]["answered"] <= ASKED
    assert qa["default"]["cost_usd"] == 0.0  # unpriced alias: the router reports 0
    # The hosted stand-in always answers and cites source 1: its hit rate is the share of
    # questions whose best retrieved chunk belongs to a relevant document.
    assert qa["hosted"]["answered"] == ASKED
    assert qa["hosted"]["citations"] == ASKED
    assert qa["hosted"]["citation_precision"] == qa["hosted"]["citation_hit_rate"]
    expected_cost = (
        qa["hosted"]["prompt_tokens"] * 0.15 + qa["hosted"]["completion_tokens"] * 0.6
    ) / 1000
    assert qa["hosted"]["cost_usd"] == pytest.approx(expected_cost, rel=1e-6)
    assert len(hosted_llm.requests) == ASKED
    assert all(r.body["model"] == "test-model" for r in hosted_llm.requests)
    broken = qa["broken"]
    assert (broken["asked"], broken["replies"], broken["errors"]) == (ASKED, 0, ASKED)
    assert broken["citation_hit_rate"] is None
    assert broken["first_error"].startswith("HTTP 5"), broken["first_error"]


async def test_eval_qa_prints_the_table(
    qa_gateway_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMESH_API_KEY", token(roles=["editor"]))
    monkeypatch.setenv("COLUMNS", "120")
    argv = [
        "eval", "--dataset", str(DATASET), "--qa", "--models", "default,broken,nope",
        "--limit", "2", "--modes", "bm25", "--concurrency", "8", "--url", qa_gateway_url,
    ]  # fmt: skip
    code = await asyncio.to_thread(main, argv)
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "30 documents, 30 queries"
    assert lines[2].startswith("bm25")
    header = next(line for line in lines if "metric" in line)
    assert header.index("default") < header.index("broken") < header.index("nope")
    hit = re.findall(r"n/a|\d+\.\d+", next(line for line in lines if "citation hit rate" in line))
    assert len(hit) == 3
    assert 0.0 < float(hit[0]) <= 1.0  # default
    assert hit[1:] == ["n/a", "n/a"]  # broken, nope
    assert "broken: 2 of 2 failed; first error: HTTP 5" in out
    # A mistyped alias is a client error naming the valid ones, not a crash.
    assert "nope: 2 of 2 failed; first error: HTTP 404: unknown model 'nope'" in out


async def test_eval_rejects_bad_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = await asyncio.to_thread(
        main, ["eval", "--dataset", str(DATASET), "--modes", "none", "--url", "http://127.0.0.1:9"]
    )
    assert code == 1
    assert "nothing to measure" in capsys.readouterr().err
    code = await asyncio.to_thread(
        main,
        ["eval", "--dataset", str(DATASET), "--qa", "--models", " , ", "--url", "http://x:9"],
    )
    assert code == 1
    assert "--models names no model alias" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--dataset", str(DATASET), "--qa", "--concurrency", "0"])
    assert "must be at least 1" in capsys.readouterr().err
