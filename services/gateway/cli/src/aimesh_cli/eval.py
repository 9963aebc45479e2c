"""``aimesh eval --dataset DIR``: retrieval quality on a BEIR-layout dataset.

Reads ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv``, ingests the corpus into a
fresh collection through the gateway, runs every query in dense, BM25 and hybrid mode and
prints recall@1/5/10, MRR@10 and nDCG@10 per mode. The collection is deleted afterwards
(unless ``--keep``). Metrics are per query, then averaged over the queries that have at
least one relevant document:

* recall@k: relevant documents among the first k, divided by all relevant documents;
* MRR@10: 1 / rank of the first relevant document within 10 (0 when none);
* nDCG@10: sum of grade / log2(rank + 1) over the first 10, divided by the same sum for
  the ideal order (linear gain, as trec_eval).

Search returns chunks; a document's rank is that of its best chunk.

With ``--qa`` every query is also asked through ``/v1/ask`` once per alias of ``--models``
and the aliases are compared side by side (citation hit rate and precision, latency,
tokens, cost): see :mod:`aimesh_cli.eval_qa`. When the dataset has an ``answers.jsonl``
(``{"_id": query id, "answers": [short gold answers]}`` a line, see
:mod:`aimesh_cli.answers`), ``--qa`` also grades the replies: correct, gold answer in the
passages, and their ratio. ``--modes none`` skips the retrieval metrics. With ``--fit``
every hybrid fusion setting is measured and the best reported (``--fit-collection C``
stores it on collection C): see :mod:`aimesh_cli.eval_fit`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from aimesh_cli import eval_fit
from aimesh_cli.answers import load_answers
from aimesh_cli.eval_qa import CORPUS_ID_KEY, AliasReport, print_qa_table, run_qa
from aimesh_cli.http import add_connection_arguments, async_client, client, problem

MODES = ("dense", "bm25", "hybrid")
METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
Qrels = dict[str, dict[str, int]]
# Documents per upsert request: small enough that one request stays well within the gateway's
# request timeout on a busy machine (each document is chunked and embedded synchronously).
INGEST_BATCH = 10


class EvalError(Exception):
    """A readable reason why the evaluation cannot run."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "eval", help="Measure retrieval (and with --qa, answer) quality on a BEIR dataset"
    )
    parser.add_argument("--dataset", required=True, type=Path, help="Folder in the BEIR layout")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="Comma-separated search modes, or none"
    )
    parser.add_argument(
        "--fusion", choices=("adaptive", "rrf", "weighted"), help="Hybrid fusion override"
    )
    parser.add_argument("--dense-weight", type=float, help="Weighted fusion: dense weight")
    parser.add_argument(
        "--qa", action="store_true", help="Also ask every query through /v1/ask, per model"
    )
    parser.add_argument(
        "--models",
        default="default",
        help="--qa: comma-separated model aliases to compare (default: default)",
    )
    parser.add_argument(
        "--concurrency", type=_positive, default=4, help="--qa: requests in flight (default 4)"
    )
    parser.add_argument(
        "--top-k", type=_positive, default=5, help="--qa: sources per question (default 5)"
    )
    parser.add_argument(
        "--limit", type=_positive, help="--qa: ask only the first N queries (a quick check)"
    )
    parser.add_argument(
        "--fit",
        action="store_true",
        help="Try every hybrid fusion setting and report the best (see --fit-objective)",
    )
    parser.add_argument(
        "--fit-objective",
        choices=eval_fit.OBJECTIVES,
        default="mrr@10",
        help="--fit: the metric the best setting maximises (default mrr@10)",
    )
    parser.add_argument(
        "--fit-collection",
        metavar="C",
        help="Store the fitted fusion as collection C's default (implies --fit)",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the collection afterwards")
    parser.add_argument("--json", action="store_true", help="Print the metrics as JSON")
    add_connection_arguments(parser)
    parser.set_defaults(func=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# Metrics (pure functions; tests check them by hand)


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


def evaluate(rankings: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Mean of each metric over the queries of ``qrels`` with a relevant document."""
    queries = [q for q, rel in qrels.items() if any(g > 0 for g in rel.values())]
    if not queries:
        raise EvalError("qrels name no relevant document")
    totals = dict.fromkeys(METRICS, 0.0)
    for query in queries:
        ranking = rankings.get(query, [])
        relevant = qrels[query]
        totals["recall@1"] += recall_at(ranking, relevant, 1)
        totals["recall@5"] += recall_at(ranking, relevant, 5)
        totals["recall@10"] += recall_at(ranking, relevant, 10)
        totals["mrr@10"] += mrr_at(ranking, relevant)
        totals["ndcg@10"] += ndcg_at(ranking, relevant)
    return {name: value / len(queries) for name, value in totals.items()}


def documents_in_order(chunk_document_ids: Sequence[str]) -> list[str]:
    """Document ids in the order of their best chunk."""
    return list(dict.fromkeys(chunk_document_ids))


# Dataset


@dataclass(frozen=True)
class Dataset:
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    queries: dict[str, str]
    qrels: Qrels
    answers: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # short gold answers


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise EvalError(f"{path} is missing")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise EvalError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(row, dict) or "_id" not in row:
            raise EvalError(f"{path}:{number}: needs an object with _id")
        rows.append(row)
    return rows


def load_dataset(folder: Path) -> Dataset:
    corpus = {
        str(r["_id"]): (str(r.get("title") or ""), str(r.get("text") or ""))
        for r in _jsonl(folder / "corpus.jsonl")
    }
    queries = {str(r["_id"]): str(r.get("text") or "") for r in _jsonl(folder / "queries.jsonl")}
    qrels_path = folder / "qrels" / "test.tsv"
    if not qrels_path.is_file():
        raise EvalError(f"{qrels_path} is missing")
    qrels: Qrels = {}
    for number, line in enumerate(qrels_path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if not line.strip() or (number == 1 and parts[0] == "query-id"):
            continue
        if len(parts) != 3 or not parts[2].strip().lstrip("-").isdigit():
            raise EvalError(f"{qrels_path}:{number}: expected query-id<TAB>corpus-id<TAB>score")
        if parts[0] in queries:
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    try:
        answers = load_answers(folder)
    except ValueError as error:
        raise EvalError(str(error)) from None
    return Dataset(corpus, queries, qrels, {q: a for q, a in answers.items() if q in queries})


# Running


def _check(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        raise EvalError(f"{what}: {problem(response)}")
    return response.json() if response.content else None


def _modes(text: str) -> list[str]:
    if text.strip().lower() == "none":
        return []
    modes = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    for mode in modes:
        if mode not in MODES:
            raise EvalError(f"unknown mode '{mode}' (use {', '.join(MODES)} or none)")
    return modes


def _aliases(text: str) -> list[str]:
    aliases = list(dict.fromkeys(a.strip() for a in text.split(",") if a.strip()))
    if not aliases:
        raise EvalError("--models names no model alias")
    return aliases


def corpus_document(
    doc_id: str, title: str, text: str, *, context: bool
) -> tuple[str, dict[str, Any]]:
    """The text and metadata a corpus entry is stored with. In a collection with chunk
    context the title goes into the metadata, from where every chunk carries it; without,
    it heads the text (and so only the first chunk)."""
    # Citations carry the chunk's metadata: how --qa maps them back to qrels.
    metadata: dict[str, Any] = {CORPUS_ID_KEY: doc_id}
    if not title:
        return text, metadata
    if context and text.strip():
        return text, {**metadata, "title": title}
    return f"{title}\n\n{text}", metadata


def _ingest(http: httpx.Client, collection: str, dataset: Dataset, *, context: bool) -> None:
    items = list(dataset.corpus.items())
    for start in range(0, len(items), INGEST_BATCH):
        documents = []
        for doc_id, (title, text) in items[start : start + INGEST_BATCH]:
            if not (text.strip() or title.strip()):
                continue
            body, metadata = corpus_document(doc_id, title, text, context=context)
            documents.append({"id": doc_id, "text": body, "metadata": metadata})
        _check(
            http.post(f"/v1/collections/{collection}/documents", json=documents),
            "storing the corpus",
        )


def _retrieval(
    http: httpx.Client,
    collection: str,
    dataset: Dataset,
    modes: Sequence[str],
    args: argparse.Namespace,
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        fusion: dict[str, Any] = {}
        if mode == "hybrid" and args.fusion:
            fusion["fusion"] = args.fusion
        if mode == "hybrid" and args.dense_weight is not None:
            fusion["dense_weight"] = args.dense_weight
        results[mode] = _measure(http, collection, dataset, mode, fusion)
    return results


def _measure(
    http: httpx.Client, collection: str, dataset: Dataset, mode: str, fusion: Mapping[str, Any]
) -> dict[str, float]:
    """The metrics of one search mode (with ``fusion``'s fields in each request)."""
    rankings: dict[str, list[str]] = {}
    for query_id in dataset.qrels:
        body: dict[str, Any] = {"query": dataset.queries[query_id], "top_k": 30, "mode": mode}
        body.update(fusion)
        found = _check(
            http.post(f"/v1/collections/{collection}/search", json=body), f"{mode} search"
        )
        rankings[query_id] = documents_in_order([h["document_id"] for h in found["results"]])
    return evaluate(rankings, dataset.qrels)


def _fit(
    http: httpx.Client, collection: str, dataset: Dataset, args: argparse.Namespace
) -> dict[str, Any]:
    """Every fusion candidate measured on the dataset; the best stored on --fit-collection."""
    result = eval_fit.fit(
        lambda candidate: _measure(http, collection, dataset, "hybrid", candidate),
        args.fit_objective,
    )
    if args.fit_collection:
        _check(
            http.patch(f"/v1/collections/{args.fit_collection}", json={"fusion": result["best"]}),
            f"storing the fusion on collection '{args.fit_collection}'",
        )
        result["stored_on"] = args.fit_collection
    return result


async def _qa(
    args: argparse.Namespace, collection: str, dataset: Dataset, aliases: Sequence[str]
) -> dict[str, Any]:
    questions = [
        (query_id, dataset.queries[query_id])
        for query_id, relevant in dataset.qrels.items()
        if any(grade > 0 for grade in relevant.values())
    ][: args.limit]
    async with async_client(args, connections=args.concurrency) as http:
        reports = await run_qa(
            http,
            collection,
            questions,
            dataset.qrels,
            aliases,
            top_k=args.top_k,
            concurrency=args.concurrency,
            answers=dataset.answers or None,
        )
    return {
        "questions": len(questions),
        "with_gold_answers": sum(1 for query_id, _ in questions if query_id in dataset.answers),
        "top_k": args.top_k,
        "concurrency": args.concurrency,
        "models": {report.alias: dataclasses.asdict(report) for report in reports},
    }


def run_eval(http: httpx.Client, dataset: Dataset, args: argparse.Namespace) -> dict[str, Any]:
    modes = _modes(args.modes)
    aliases = _aliases(args.models) if args.qa else []
    if not modes and not args.qa:
        raise EvalError("nothing to measure: --modes none without --qa")
    if args.fit_collection:
        # Fail before the corpus is ingested, not after every candidate ran.
        listed = _check(http.get("/v1/collections"), "listing the collections")
        names = [c["name"] for c in listed["collections"]]
        if args.fit_collection not in names:
            raise EvalError(f"--fit-collection: collection '{args.fit_collection}' not found")
    collection = f"eval-{uuid.uuid4().hex[:12]}"
    created = _check(
        http.post("/v1/collections", json={"name": collection}), "creating the collection"
    )
    try:
        context = bool((created or {}).get("chunking", {}).get("context"))
        _ingest(http, collection, dataset, context=context)
        report: dict[str, Any] = {
            "collection": collection,
            "documents": len(dataset.corpus),
            "queries": len(dataset.qrels),
            "metrics": _retrieval(http, collection, dataset, modes, args),
        }
        if args.fit or args.fit_collection:
            report["fit"] = _fit(http, collection, dataset, args)
        if args.qa:
            report["qa"] = asyncio.run(_qa(args, collection, dataset, aliases))
        return report
    finally:
        if not args.keep:
            http.delete(f"/v1/collections/{collection}")


def run(args: argparse.Namespace) -> int:
    try:
        dataset = load_dataset(args.dataset)
        with client(args) as http:
            report = run_eval(http, dataset, args)
    except EvalError as error:
        print(f"aimesh eval: {error}", file=sys.stderr)
        return 1
    except httpx.HTTPError as error:
        print(f"aimesh eval: cannot reach the gateway: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{len(dataset.corpus)} documents, {report['queries']} queries")
    if report["metrics"]:
        print(f"{'mode':<8}" + "".join(f"{name:>11}" for name in METRICS))
        for mode, metrics in report["metrics"].items():
            print(f"{mode:<8}" + "".join(f"{metrics[name]:>11.4f}" for name in METRICS))
    if "fit" in report:
        fitted = report["fit"]
        print(f"hybrid fusion fit (objective {fitted['objective']}):")
        print(f"{'fusion':<14}" + "".join(f"{name:>11}" for name in METRICS))
        for row in fitted["candidates"]:
            mark = " *" if row["fusion"] == fitted["best"] else ""
            print(
                f"{row['label']:<14}"
                + "".join(f"{row['metrics'][name]:>11.4f}" for name in METRICS)
                + mark
            )
        where = f"; stored on collection '{fitted['stored_on']}'" if "stored_on" in fitted else ""
        print(f"best: {eval_fit.label(fitted['best'])}{where}")
    if "qa" in report:
        reports = [AliasReport(**values) for values in report["qa"]["models"].values()]
        print_qa_table(reports, Console(highlight=False))
    return 0
