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
    correct_over_ceiling,
    is_answered,
    outcome_from_events,
    outcome_from_reply,
    parse_sse,
    percentile,
    print_qa_table,
    share,
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


def test_grading_by_hand() -> None:
    qrels = {f"q{n}": {"a": 1} for n in range(1, 7)}
    outcomes = [
        AskOutcome("q1", 1.0, True, ("a",), correct=True, gold_in_passages=True),
        AskOutcome("q2", 1.0, True, ("a",), correct=False, gold_in_passages=True),
        AskOutcome("q3", 1.0, True, ("a",), correct=False, gold_in_passages=True),
        AskOutcome("q4", 1.0, False, (), correct=False, gold_in_passages=False),
        AskOutcome("q5", 1.0, True, ("a",)),  # no gold answers: not graded
        AskOutcome("q6", error="HTTP 503: down"),  # errors are not graded either
    ]
    report = summarize("default", outcomes, qrels)
    assert report.graded == 4
    assert report.correct_rate == 0.25  # q1 of q1-q4
    assert report.gold_in_passages_rate == 0.75  # q1-q3
    assert report.correct_of_gold_in_passages == pytest.approx(1 / 3)
    assert share([]) is None
    assert correct_over_ceiling(0.0, 0.0) is None  # no passage held a gold answer
    assert correct_over_ceiling(None, 0.5) is None
    ungraded = summarize("default", outcomes[4:], qrels)
    assert (ungraded.graded, ungraded.correct_rate, ungraded.gold_in_passages_rate) == (
        0,
        None,
        None,
    )


STREAM = (
    'event: sources\ndata: {"sources": [{"document_id": "x", "text": "Use -r, --recursive.",'
    ' "metadata": {"corpus_id": "d1"}}, {"document_id": "y", "text": "Use -v to talk.",'
    ' "metadata": {}}]}\n\n'
    'event: delta\ndata: {"text": "Pass -v"}\n\n'
    'event: delta\ndata: {"text": " [2]."}\n\n'
    'event: citations\ndata: {"citations": [{"document_id": "y", "text": "Use -v to talk.",'
    ' "metadata": {}}]}\n\n'
    'event: usage\ndata: {"prompt_tokens": 30, "completion_tokens": 4, "estimated": true}\n\n'
    'event: done\ndata: {"model": "default", "provider": "local", "finish_reason": "stop"}\n\n'
)


def test_parse_sse() -> None:
    events = parse_sse(STREAM)
    assert [name for name, _ in events] == [
        "sources", "delta", "delta", "citations", "usage", "done",
    ]  # fmt: skip
    assert events[1][1] == {"text": "Pass -v"}
    assert parse_sse('data: {"a": 1}\n\n: a comment\n\n') == [("message", {"a": 1})]
    with pytest.raises(ValueError, match="Expecting"):
        parse_sse("event: delta\ndata: {not json\n\n")


def test_outcome_from_events_grades_reply_and_passages() -> None:
    events = parse_sse(STREAM)
    # Gold -r: in source 1 (the passages), not in the reply, which quotes -v.
    missed = outcome_from_events("q1", 9.0, events, ["-r", "--recursive"])
    assert (missed.correct, missed.gold_in_passages) == (False, True)
    assert missed.answer == "Pass -v [2]."
    assert missed.cited_documents == ("y",)
    assert (missed.prompt_tokens, missed.completion_tokens) == (30, 4)
    assert missed.estimated_tokens
    assert (missed.served_by, missed.provider, missed.error) == ("default", "local", None)
    hit = outcome_from_events("q1", 9.0, events, ["-V", "-v"])
    assert (hit.correct, hit.gold_in_passages) == (True, True)
    nowhere = outcome_from_events("q1", 9.0, events, ["--force"])
    assert (nowhere.correct, nowhere.gold_in_passages) == (False, False)
    ungraded = outcome_from_events("q1", 9.0, events, [])
    assert (ungraded.correct, ungraded.gold_in_passages) == (None, None)
    failed = outcome_from_events(
        "q1", 9.0, [*events[:2], ("error", {"status": 503, "detail": "router down"})], ["-r"]
    )
    assert failed.error == "HTTP 503: router down"
    cut = outcome_from_events("q1", 9.0, events[:3], ["-r"])
    assert cut.error is not None
    assert cut.error.startswith("unexpected stream")


def test_table_shows_correctness_rows_only_when_graded() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"a": 1}}
    graded = AskOutcome("q1", 1.0, True, ("a",), correct=True, gold_in_passages=True)
    missed = AskOutcome("q2", 1.0, True, ("a",), correct=False, gold_in_passages=True)
    out = StringIO()
    print_qa_table([summarize("default", [graded, missed], qrels)], Console(file=out, width=100))
    text = out.getvalue()
    row = next(line for line in text.splitlines() if "correct (gold in reply)" in line)
    assert "0.500" in row
    row = next(line for line in text.splitlines() if line.lstrip("│ ").startswith("gold in"))
    assert "1.000" in row
    assert "correct / gold in passages" in text
    out = StringIO()
    print_qa_table([summarize("default", [AskOutcome("q1", 1.0)], qrels)], Console(file=out))
    assert "gold in passages" not in out.getvalue()


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


# A small QA dataset in the layout of tests/data/qa-eval-*: man-page-like documents, short
# questions, gold answers (the full sets take minutes to ingest on a busy machine).
QA_CORPUS = {
    "tar": "tar - an archiving utility. -x, --extract: extract files from an archive. "
    "-c, --create: create a new archive. -v, --verbose: verbosely list files processed.",
    "grep": "grep - print lines that match patterns. -i, --ignore-case: ignore case "
    "distinctions in patterns and input data. -c, --count: print a count of matching lines.",
    "sort": "sort - sort lines of text files. -r, --reverse: reverse the result of "
    "comparisons. -u, --unique: output only the first of an equal run.",
    "gzip": "gzip - compress or expand files. -d, --decompress: decompress. -k, --keep: "
    "keep (don't delete) input files during compression or decompression.",
}
QA_QUESTIONS = {
    "q1": ("which tar option unpacks the documents stored in a bundle", "tar", ["-x", "--extract"]),
    "q2": ("grep: what flag matches without caring about upper or lower case", "grep",
           ["-i", "--ignore-case"]),
    "q3": ("which option of sort gives the output in descending order", "sort",
           ["-r", "--reverse"]),
}  # fmt: skip


def small_qa_dataset(folder: Path) -> None:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": d, "text": t}) + "\n" for d, t in QA_CORPUS.items())
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _, _) in QA_QUESTIONS.items())
    )
    (folder / "answers.jsonl").write_text(
        "".join(
            json.dumps({"_id": q, "answers": a}) + "\n" for q, (_, _, a) in QA_QUESTIONS.items()
        )
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q}\t{d}\t1\n" for q, (_, d, _) in QA_QUESTIONS.items())
    )


@pytest.mark.slow
async def test_eval_qa_grades_replies_against_gold_answers(
    qa_gateway_url: str,
    hosted_llm: FakeOpenAI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMESH_API_KEY", token(roles=["editor"]))
    monkeypatch.setenv("COLUMNS", "140")
    small_qa_dataset(tmp_path / "qa")
    gold = [answers for _, _, answers in QA_QUESTIONS.values()]
    # The hosted stand-in (asked one question at a time, in order) names the first answer of
    # questions 1 and 3 and not question 2's: 2 of 3 correct, whatever the passages hold.
    hosted_llm.enqueue(
        Reply(content=f"Pass {gold[0][0]} [1]."),
        Reply(content="I don't know."),
        Reply(content=f"It is `{gold[2][-1].upper()}` [2]."),  # case and quotes do not matter
    )
    argv = [
        "eval", "--dataset", str(tmp_path / "qa"), "--qa", "--models", "default,hosted",
        "--modes", "none", "--concurrency", "1", "--json", "--url", qa_gateway_url,
    ]  # fmt: skip
    code = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["qa"]["with_gold_answers"] == 3
    hosted = report["qa"]["models"]["hosted"]
    default = report["qa"]["models"]["default"]
    assert hosted["graded"] == default["graded"] == 3
    assert hosted["correct_rate"] == pytest.approx(2 / 3)
    # Both aliases are grounded on the same retrieved passages.
    assert hosted["gold_in_passages_rate"] == default["gold_in_passages_rate"]
    assert 0.0 < default["gold_in_passages_rate"] <= 1.0
    assert hosted["correct_of_gold_in_passages"] == pytest.approx(
        hosted["correct_rate"] / hosted["gold_in_passages_rate"]
    )
    # The extractive provider quotes passages: it cannot be right where they hold no answer.
    assert default["correct_rate"] <= default["gold_in_passages_rate"]
    assert hosted["citation_hit_rate"] is not None
    assert all(r.body.get("stream") for r in hosted_llm.requests[-3:])
    # The table shows the grading rows.
    hosted_llm.enqueue(*(Reply(content="No idea.") for _ in range(3)))
    argv = [a for a in argv if a != "--json"]
    assert await asyncio.to_thread(main, argv) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if "correct (gold in reply)" in line)
    assert re.findall(r"\d+\.\d+", row)[-1] == "0.000"  # hosted: "No idea." three times
    assert "gold in passages" in table


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
