"""``aimesh eval --qa``: how well ``/v1/ask`` answers the dataset's queries, per model alias.

Every query that qrels gives a relevant document is asked through ``POST /v1/ask`` (not
streamed) on the evaluation's collection, once per alias of ``--models``, at most
``--concurrency`` requests in flight. Per alias:

* asked, answered (a reply that is not "I don't know"), errors (non-2xx or no reply);
* citation hit rate: share of the replies whose citations name at least one document that
  qrels marks relevant (grade > 0);
* citation precision: share of all citations (one per cited source) that point to a
  relevant document; "n/a" when no reply cites anything;
* latency p50/p95: wall time of the request as the client sees it, in ms, over the replies
  (nearest-rank percentiles; with concurrency it includes waiting in the gateway);
* prompt and completion tokens, sum and mean per reply, as the response's ``usage`` gives
  them; cost: the sum of ``usage.cost_usd`` (the router prices each call with the answering
  alias's configured prices), "n/a" when the gateway reports no cost.

When the dataset gives short gold answers (``answers.jsonl`` beside ``queries.jsonl``, see
:mod:`aimesh_cli.answers`), each question is asked with ``stream: true`` instead, so the
client sees every passage the answer was grounded on (the ``sources`` event: all chunks
packed into the model's context, not only the cited ones), and per alias also:

* correct: share of the graded replies (replies to questions with gold answers) that
  contain a gold answer (:func:`aimesh_cli.answers.contains_answer`: NFKC, case folded,
  quotes dropped, whitespace collapsed, matched as whole tokens);
* gold in passages: share of the graded replies whose passages contain a gold answer, the
  same way; the ceiling of an answer that quotes its passages;
* correct / gold in passages: the first over the second, how much of that ceiling the
  answers reach.

Rates and token figures are over replies, so an alias that errors is not rewarded by it: the
errors column and the first error message are shown next to them.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from aimesh_cli.answers import contains_answer
from aimesh_cli.http import problem

# Metadata key under which the evaluation stores each document's corpus id at ingestion.
CORPUS_ID_KEY = "corpus_id"
_DONT_KNOW_PREFIXES = ("i don't know", "i don\u2019t know", "i do not know")


@dataclass(frozen=True)
class AskOutcome:
    """One question put to one alias: the reply's figures, or the error."""

    query_id: str
    latency_ms: float = 0.0
    answered: bool = False
    cited_documents: tuple[str, ...] = ()  # corpus id of every citation, in order
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_tokens: bool = False
    cost_usd: float | None = None
    served_by: str = ""
    provider: str = ""
    error: str | None = None
    correct: bool | None = None  # None: no gold answers for this question
    gold_in_passages: bool | None = None
    answer: str = ""


@dataclass
class AliasReport:
    """The figures of one alias (see the module docstring)."""

    alias: str
    asked: int
    replies: int
    answered: int
    errors: int
    citation_hit_rate: float | None
    citation_precision: float | None
    citations: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    prompt_tokens_mean: float | None
    completion_tokens_mean: float | None
    estimated_tokens: int
    cost_usd: float | None
    served_by: dict[str, int] = field(default_factory=dict)
    providers: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
    graded: int = 0
    correct_rate: float | None = None
    gold_in_passages_rate: float | None = None
    correct_of_gold_in_passages: float | None = None


# Pure functions (tests check them by hand)


def is_answered(answer: str) -> bool:
    """False for an empty reply or one that says it does not know."""
    text = answer.strip().lower()
    return bool(text) and not text.startswith(_DONT_KNOW_PREFIXES)


def relevant_documents(relevant: Mapping[str, int]) -> set[str]:
    return {doc for doc, grade in relevant.items() if grade > 0}


def citation_hit_rate(cited: Sequence[Sequence[str]], qrels: Sequence[Mapping[str, int]]) -> float:
    """Share of replies (``cited[i]`` with relevance ``qrels[i]``) citing a relevant document."""
    if len(cited) != len(qrels):
        raise ValueError("one relevance mapping per reply")
    if not cited:
        return 0.0
    hits = sum(
        1 for docs, rel in zip(cited, qrels, strict=True) if set(docs) & relevant_documents(rel)
    )
    return hits / len(cited)


def citation_precision(
    cited: Sequence[Sequence[str]], qrels: Sequence[Mapping[str, int]]
) -> float | None:
    """Relevant citations over all citations of all replies; None when nothing is cited."""
    if len(cited) != len(qrels):
        raise ValueError("one relevance mapping per reply")
    total = sum(len(docs) for docs in cited)
    if total == 0:
        return None
    good = sum(
        sum(1 for doc in docs if doc in relevant_documents(rel))
        for docs, rel in zip(cited, qrels, strict=True)
    )
    return good / total


def share(flags: Sequence[bool]) -> float | None:
    """The share of true values; None for none at all."""
    return sum(1 for flag in flags if flag) / len(flags) if flags else None


def correct_over_ceiling(correct: float | None, ceiling: float | None) -> float | None:
    """Correct answers over the questions whose passages hold a gold answer; None when no
    passages hold one (nothing to reach)."""
    if correct is None or not ceiling:
        return None
    return correct / ceiling


# Its own copy of aimesh_common.stats.percentile: a client without the server kit (grpcio).
def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least q % of the values at or
    below it (p50 of 1, 2, 3, 4 is 2; p95 of 20 values is the 19th smallest)."""
    if not 0 < q <= 100:
        raise ValueError("q must be in (0, 100]")
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[rank - 1]


def summarize(
    alias: str, outcomes: Sequence[AskOutcome], qrels: Mapping[str, Mapping[str, int]]
) -> AliasReport:
    """The figures of one alias from its outcomes; rates and means are over the replies."""
    replies = [o for o in outcomes if o.error is None]
    errors = [o for o in outcomes if o.error is not None]
    cited = [o.cited_documents for o in replies]
    relevance = [qrels.get(o.query_id, {}) for o in replies]
    latencies = [o.latency_ms for o in replies]
    prompt = sum(o.prompt_tokens for o in replies)
    completion = sum(o.completion_tokens for o in replies)
    priced = bool(replies) and all(o.cost_usd is not None for o in replies)
    graded = [o for o in replies if o.correct is not None]
    correct = share([bool(o.correct) for o in graded])
    in_passages = share([bool(o.gold_in_passages) for o in graded])
    return AliasReport(
        alias=alias,
        asked=len(outcomes),
        replies=len(replies),
        answered=sum(1 for o in replies if o.answered),
        errors=len(errors),
        citation_hit_rate=citation_hit_rate(cited, relevance) if replies else None,
        citation_precision=citation_precision(cited, relevance),
        citations=sum(len(docs) for docs in cited),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        prompt_tokens=prompt,
        completion_tokens=completion,
        prompt_tokens_mean=prompt / len(replies) if replies else None,
        completion_tokens_mean=completion / len(replies) if replies else None,
        estimated_tokens=sum(1 for o in replies if o.estimated_tokens),
        cost_usd=sum(o.cost_usd or 0.0 for o in replies) if priced else None,
        served_by=dict(Counter(o.served_by for o in replies if o.served_by)),
        providers=dict(Counter(o.provider for o in replies if o.provider)),
        first_error=errors[0].error if errors else None,
        graded=len(graded),
        correct_rate=correct,
        gold_in_passages_rate=in_passages,
        correct_of_gold_in_passages=correct_over_ceiling(correct, in_passages),
    )


# Asking


def outcome_from_reply(query_id: str, latency_ms: float, body: Any) -> AskOutcome:
    """Read an ``/v1/ask`` JSON reply; a body of another shape is an error outcome."""
    try:
        usage = body["usage"]
        cited = tuple(
            str((c.get("metadata") or {}).get(CORPUS_ID_KEY) or c["document_id"])
            for c in body["citations"]
        )
        cost = usage.get("cost_usd")
        return AskOutcome(
            query_id=query_id,
            latency_ms=latency_ms,
            answered=is_answered(str(body["answer"])),
            cited_documents=cited,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            estimated_tokens=bool(usage.get("estimated", False)),
            cost_usd=float(cost) if isinstance(cost, int | float) else None,
            served_by=str(body.get("model") or ""),
            provider=str(body.get("provider") or ""),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return AskOutcome(query_id, latency_ms, error="unexpected reply: " + str(body)[:200])


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """``(event name, JSON data)`` of a text/event-stream body; an event without a name is
    ``message`` (as in the SSE spec); data that is not JSON raises ``ValueError``."""
    events: list[tuple[str, Any]] = []
    name, data = "", list[str]()
    for line in [*text.splitlines(), ""]:
        if not line:
            if data:
                events.append((name or "message", json.loads("\n".join(data))))
            name, data = "", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    return events


def outcome_from_events(
    query_id: str, latency_ms: float, events: Sequence[tuple[str, Any]], answers: Sequence[str]
) -> AskOutcome:
    """Read a streamed ``/v1/ask`` reply (its events in order), graded against ``answers``
    (the question's gold answers; empty: not graded). An ``error`` event, or a stream
    without ``usage`` and ``done``, is an error outcome."""
    try:
        text: list[str] = []
        passages: list[str] = []
        cited: tuple[str, ...] = ()
        usage: Mapping[str, Any] | None = None
        done: Mapping[str, Any] | None = None
        for name, data in events:
            if name == "error":
                return AskOutcome(
                    query_id, latency_ms, error=f"HTTP {data.get('status')}: {data.get('detail')}"
                )
            if name == "sources":
                passages.extend(str(item["text"]) for item in data["sources"])
            elif name == "delta":
                text.append(str(data["text"]))
            elif name == "citations":
                cited = tuple(
                    str((c.get("metadata") or {}).get(CORPUS_ID_KEY) or c["document_id"])
                    for c in data["citations"]
                )
            elif name == "usage":
                usage = data
            elif name == "done":
                done = data
        if usage is None or done is None:
            raise ValueError("no usage or done event")
        answer = "".join(text)
        cost = usage.get("cost_usd")
        return AskOutcome(
            query_id=query_id,
            latency_ms=latency_ms,
            answered=is_answered(answer),
            cited_documents=cited,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            estimated_tokens=bool(usage.get("estimated", False)),
            cost_usd=float(cost) if isinstance(cost, int | float) else None,
            served_by=str(done.get("model") or ""),
            provider=str(done.get("provider") or ""),
            correct=contains_answer(answer, answers) if answers else None,
            gold_in_passages=any(contains_answer(p, answers) for p in passages)
            if answers
            else None,
            answer=answer,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        return AskOutcome(query_id, latency_ms, error=f"unexpected stream: {error}"[:200])


async def ask_all(
    http: httpx.AsyncClient,
    collection: str,
    questions: Sequence[tuple[str, str]],
    alias: str,
    *,
    top_k: int,
    concurrency: int,
    answers: Mapping[str, Sequence[str]] | None = None,
) -> list[AskOutcome]:
    """Ask every ``(query_id, text)`` with ``alias``, at most ``concurrency`` at a time; with
    ``answers`` (gold answers by query id) streamed and graded (see the module docstring)."""
    gate = asyncio.BoundedSemaphore(concurrency)
    stream = answers is not None

    async def one(query_id: str, text: str) -> AskOutcome:
        async with gate:
            body = {
                "question": text,
                "collection": collection,
                "model": alias,
                "top_k": top_k,
                "stream": stream,
            }
            started = time.perf_counter()
            try:
                response = await http.post("/v1/ask", json=body)
            except httpx.HTTPError as error:
                return AskOutcome(query_id, error=f"{type(error).__name__}: {error}")
            latency_ms = (time.perf_counter() - started) * 1000
        if response.status_code >= 400:
            return AskOutcome(query_id, latency_ms, error=problem(response))
        if stream:
            try:
                events = parse_sse(response.text)
            except ValueError:
                return AskOutcome(query_id, latency_ms, error="stream data is not JSON")
            gold = (answers or {}).get(query_id, ())
            return outcome_from_events(query_id, latency_ms, events, gold)
        try:
            payload = response.json()
        except ValueError:
            return AskOutcome(query_id, latency_ms, error="reply is not JSON")
        return outcome_from_reply(query_id, latency_ms, payload)

    return list(await asyncio.gather(*(one(q, t) for q, t in questions)))


async def run_qa(
    http: httpx.AsyncClient,
    collection: str,
    questions: Sequence[tuple[str, str]],
    qrels: Mapping[str, Mapping[str, int]],
    aliases: Sequence[str],
    *,
    top_k: int,
    concurrency: int,
    answers: Mapping[str, Sequence[str]] | None = None,
) -> list[AliasReport]:
    """One report per alias; the aliases run one after the other, so they do not compete."""
    reports = []
    for alias in aliases:
        outcomes = await ask_all(
            http,
            collection,
            questions,
            alias,
            top_k=top_k,
            concurrency=concurrency,
            answers=answers,
        )
        reports.append(summarize(alias, outcomes, qrels))
    return reports


# Output


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _mean(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _cost(value: float | None) -> str:
    return "n/a" if value is None else f"${value:.6f}"


def _counts(values: Mapping[str, int]) -> str:
    return ", ".join(f"{name} ({count})" for name, count in values.items()) or "-"


def print_qa_table(reports: Sequence[AliasReport], console: Console) -> None:
    """The aliases side by side, one column each; errors below the table."""
    table = Table(title="QA through /v1/ask", title_justify="left")
    table.add_column("metric")
    for report in reports:
        table.add_column(report.alias, justify="right")
    rows: list[tuple[str, list[str]]] = [
        ("asked", [str(r.asked) for r in reports]),
        ("answered", [str(r.answered) for r in reports]),
        ("errors", [str(r.errors) for r in reports]),
        ("citation hit rate", [_rate(r.citation_hit_rate) for r in reports]),
        ("citation precision", [_rate(r.citation_precision) for r in reports]),
        ("citations", [str(r.citations) for r in reports]),
    ]
    if any(r.graded for r in reports):
        rows += [
            ("graded replies", [str(r.graded) for r in reports]),
            ("correct (gold in reply)", [_rate(r.correct_rate) for r in reports]),
            ("gold in passages", [_rate(r.gold_in_passages_rate) for r in reports]),
            ("correct / gold in passages", [_rate(r.correct_of_gold_in_passages) for r in reports]),
        ]
    rows += [
        ("latency p50 (ms)", [_ms(r.latency_p50_ms) for r in reports]),
        ("latency p95 (ms)", [_ms(r.latency_p95_ms) for r in reports]),
        ("prompt tokens", [str(r.prompt_tokens) for r in reports]),
        ("  mean per reply", [_mean(r.prompt_tokens_mean) for r in reports]),
        ("completion tokens", [str(r.completion_tokens) for r in reports]),
        ("  mean per reply", [_mean(r.completion_tokens_mean) for r in reports]),
        ("cost (USD)", [_cost(r.cost_usd) for r in reports]),
        ("served by", [_counts(r.served_by) for r in reports]),
    ]
    if any(r.providers for r in reports):
        rows.append(("provider", [_counts(r.providers) for r in reports]))
    for label, cells in rows:
        table.add_row(label, *cells)
    console.print(table)
    if any(r.estimated_tokens for r in reports):
        console.print(
            "tokens estimated (provider reported none) for: "
            + ", ".join(f"{r.alias} ({r.estimated_tokens})" for r in reports if r.estimated_tokens)
        )
    for report in reports:
        if report.first_error is not None:
            console.print(
                f"{report.alias}: {report.errors} of {report.asked} failed; first error: "
                f"{report.first_error}",
                markup=False,
                highlight=False,
            )
