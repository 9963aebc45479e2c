"""Answer correctness of the extractive ``local`` provider against what retrieval finds.

For each question of a QA set (documents plus questions with gold answer strings):

* retrieve the top-k passages through the real retrieval gRPC service (Search RPC, the
  request the router's ask task sends: default mode, the query vector returned), with
  the real embedding model behind the embedding gRPC server and Milvus Lite;
* *gold in passages*: a gold answer appears in the passages;
* *correct*: a gold answer appears in the reply of ``LocalProvider.answer`` given those
  passages as numbered sources (citation markers removed before matching);
* the ratio correct / gold-in-passages: how much of what retrieval makes answerable the
  extractor turns into a right answer.

Matching is the QA sets' rule (NFKC, case folded, quotes removed, whitespace collapsed, a
whole token run: "-r" is not found in "-rf").

Retrieval runs once per set and is kept in ``.aimesh/bench-answers/<set>.json`` (keyed by
a hash of the set and k); later runs reuse it and only re-run the extractor, which takes
seconds, so selection changes can be measured quickly. ``--refresh`` retrieves again.
``--outcomes FILE`` writes each question's reply and grades as JSON lines, so two runs
of the extractor can be compared question by question. ``--model-url URL`` answers with a
model server instead (the router's ``openai`` provider and QA template, 128 tokens), to
compare engines or models on the same passages.

QA set layout (a folder): ``corpus.jsonl`` (``_id``, ``title``, ``text``) and either
``qa.jsonl`` (``_id``, ``question``, ``answers``: a list of gold strings) or
``queries.jsonl`` with ``answers.jsonl`` (``_id``, ``answers``), the layout of the
committed ``tests/data/qa-eval-*`` sets. ``--dev-manpages`` writes a
development set of that layout from the man pages installed here (see ``build_manpages``):
questions about options ("What does --recursive of grep do?" / "Which grep option reads
all files under each directory?") over whole rendered man pages.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aimesh_cli.answers import contains_answer
from scripts.bench.doc import write_section

ROOT = Path(__file__).resolve().parents[2]
KEPT = ROOT / ".aimesh" / "bench-answers"
TENANT = "bench-answers"
UPSERT_DOCUMENTS = 8
MODEL_NAME = "smollm2-135m-instruct"  # what the model server serves the packaged model as

_CITATION = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
# The QA sets' own matching rule (whole token runs after normalising).
contains = contains_answer


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    answers: list[str]


@dataclass(frozen=True)
class QaSet:
    name: str
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    questions: list[Question]

    def digest(self, top_k: int) -> str:
        hasher = hashlib.sha256(str(top_k).encode())
        for doc_id, (title, text) in sorted(self.corpus.items()):
            hasher.update(f"{doc_id}\0{title}\0{text}\0".encode())
        for question in self.questions:
            hasher.update(f"{question.id}\0{question.text}\0".encode())
        return hasher.hexdigest()[:16]


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def load(folder: Path) -> QaSet:
    """A QA set: ``qa.jsonl`` (question and answers together), or the BEIR layout with
    ``answers.jsonl`` beside ``queries.jsonl`` (``_id``, ``answers``) as the committed
    ``tests/data/qa-eval-*`` sets have it."""
    corpus = {
        str(row["_id"]): (str(row.get("title") or ""), str(row.get("text") or ""))
        for row in _rows(folder / "corpus.jsonl")
    }
    if (folder / "qa.jsonl").exists():
        questions = [
            Question(str(row["_id"]), str(row["question"]), [str(a) for a in row["answers"]])
            for row in _rows(folder / "qa.jsonl")
        ]
    else:
        answers = {str(row["_id"]): row["answers"] for row in _rows(folder / "answers.jsonl")}
        questions = [
            Question(str(row["_id"]), str(row["text"]), [str(a) for a in answers[str(row["_id"])]])
            for row in _rows(folder / "queries.jsonl")
            if str(row["_id"]) in answers
        ]
    return QaSet(folder.name.removeprefix("qa-eval-"), corpus, questions)


# Development set from the installed man pages

_MAN_PAGE_NAMES = """
grep cp ls tar sort cut find du df head tail uniq wc xargs diff gzip split mkdir rm
touch date ln chmod stat cat tr install mv comm join nl paste seq shuf tee timeout
"""
MAN_PAGES = tuple(_MAN_PAGE_NAMES.split())
_TERM = re.compile(r"^ {7}(-{1,2}[A-Za-z0-9][^ ]*(?:,? [^ ].*)?)$")
_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)")


def render_man(page: str) -> str:
    env = {**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(
        ["man", "-P", "cat", page],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    return done.stdout if done.returncode == 0 else ""


def man_options(text: str) -> list[tuple[str, str]]:
    """(term line, first sentence of its description) of each option entry of a man page."""
    lines = text.splitlines()
    entries = []
    for index, line in enumerate(lines[:-1]):
        match = _TERM.match(line)
        following = lines[index + 1]
        if not match or not following.startswith(" " * 14) or not following.strip():
            continue
        description = []
        for later in lines[index + 1 :]:
            if not later.startswith(" " * 14):
                break
            description.append(later.strip())
        body = " ".join(" ".join(description).split())
        first = re.split(r"(?<=[.;:])\s", body, maxsplit=1)[0].rstrip(".;:")
        if 3 <= len(first.split()) <= 30:
            entries.append((match.group(1).strip(), first))
    return entries


def build_manpages(folder: Path, per_page: int = 4) -> QaSet:
    """Questions about options of MAN_PAGES, two per picked option.

    "What does OPTION of CMD do?" has the description's first six words as gold;
    "Which CMD option DESCRIPTION?" has the option's flags as gold (an answer quoting the
    description without its flag is wrong). Options are picked evenly through the page.
    """
    corpus: dict[str, tuple[str, str]] = {}
    questions: list[Question] = []
    for page in MAN_PAGES:
        text = render_man(page)
        options = man_options(text)
        if not text or not options:
            continue
        doc_id = f"man-{page}"
        corpus[doc_id] = (f"{page}(1)", text)
        step = max(1, len(options) // per_page)
        for term, first in options[::step][:per_page]:
            flags = _FLAG.findall(term)
            if not flags:
                continue
            name = max(flags, key=len)
            gold = " ".join(first.split()[:6])
            base = f"{doc_id}-{name.lstrip('-')}"
            questions.append(Question(f"{base}-what", f"What does {name} of {page} do?", [gold]))
            clause = first[0].lower() + first[1:]
            questions.append(Question(f"{base}-which", f"Which {page} option: {clause}?", flags))
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for doc_id, (title, text) in corpus.items():
            out.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (folder / "qa.jsonl").open("w", encoding="utf-8") as out:
        for question in questions:
            row = {"_id": question.id, "question": question.text, "answers": question.answers}
            out.write(json.dumps(row) + "\n")
    return load(folder)


# Retrieval (once per set, kept)

Retrieved = dict[str, dict[str, Any]]  # question id -> {"passages": [...], "vector": [...]}


async def retrieve(qa: QaSet, embedding_addr: str, data: Path, top_k: int) -> Retrieved:
    import grpc
    from google.protobuf import struct_pb2

    from aimesh.retrieval.v1 import retrieval_pb2 as pb
    from aimesh.retrieval.v1 import retrieval_pb2_grpc
    from aimesh_common.embedding_client import EmbeddingClient
    from aimesh_retrieval.config import Settings
    from aimesh_retrieval.server import create_server
    from aimesh_retrieval.store import MilvusStore

    settings = Settings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        data_dir=data,
        embedding_service_addr=embedding_addr,
        embed_timeout_seconds=600,
        milvus_timeout_seconds=120,
    )
    store = MilvusStore.open(settings)
    embedder = EmbeddingClient.connect(embedding_addr, timeout=600)
    server = create_server(settings, store, embedder)
    await server.start()
    found: Retrieved = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            collection = f"a-{int(time.time())}"
            await stub.CreateCollection(
                pb.CreateCollectionRequest(tenant_id=TENANT, collection=collection)
            )
            items = list(qa.corpus.items())
            for start in range(0, len(items), UPSERT_DOCUMENTS):
                documents = [
                    pb.Document(
                        id=doc_id,
                        text=f"{title}\n\n{text}" if title else text,
                        metadata=struct_pb2.Struct(),
                    )
                    for doc_id, (title, text) in items[start : start + UPSERT_DOCUMENTS]
                ]
                await stub.UpsertDocuments(
                    pb.UpsertDocumentsRequest(
                        tenant_id=TENANT, collection=collection, documents=documents
                    ),
                    timeout=1800,
                )
            for question in qa.questions:
                reply = await stub.Search(
                    pb.SearchRequest(
                        tenant_id=TENANT,
                        collection=collection,
                        query=question.text,
                        top_k=top_k,
                        return_query_vector=True,
                    ),
                    timeout=120,
                )
                found[question.id] = {
                    "passages": [c.text for c in reply.chunks if c.text.strip()],
                    "documents": [c.document_id for c in reply.chunks],
                    "vector": list(reply.query_vector),
                }
    finally:
        await server.stop(0)
        await embedder.close()
        await store.close()
    return found


# Answering and scoring


@dataclass
class Outcome:
    question: Question
    present: bool
    correct: bool
    reply: str


VECTORS = KEPT / "vectors.npz"


def memoizing_client(channel: Any) -> Any:
    """The real embedding client, remembering every text's vector (kept in VECTORS).

    The model is deterministic, so a text embedded in an earlier run need not be sent
    again: re-running the extractor after a change costs only the new sentences.
    """
    import numpy as np

    from aimesh_common.embedding_client import EmbeddingClient, Vector

    class Memoizing(EmbeddingClient):
        memo: dict[str, Vector] = {}

        async def embed(self, texts: Sequence[str]) -> list[Vector]:
            missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
            if missing:
                self.memo.update(zip(missing, await super().embed(missing), strict=True))
            return [self.memo[text] for text in texts]

    if VECTORS.exists():
        with np.load(VECTORS) as kept:
            Memoizing.memo = dict(
                zip(kept["texts"].tolist(), kept["vectors"].tolist(), strict=True)
            )
    return Memoizing(channel, timeout=120)


def save_vectors(client: Any) -> None:
    import numpy as np

    texts = list(client.memo)
    KEPT.mkdir(parents=True, exist_ok=True)
    np.savez(VECTORS, texts=np.array(texts), vectors=np.array([client.memo[t] for t in texts]))


async def answer_all(
    qa: QaSet, found: Retrieved, embedding_addr: str, model_url: str | None = None
) -> list[Outcome]:
    """Each question answered from its passages by the extractive ``local`` provider, or,
    with ``model_url``, by the router's ``openai`` provider (its QA template, 128 tokens)
    calling the model server there."""
    import grpc

    from aimesh_llm_router.citations import Source
    from aimesh_llm_router.config import Settings
    from aimesh_llm_router.providers.base import AnswerTask, Provider, ProviderContext
    from aimesh_llm_router.providers.local import LocalProvider
    from aimesh_llm_router.providers.openai import OpenAIProvider
    from aimesh_llm_router.templates import load_prompt_library

    outcomes = []
    async with grpc.aio.insecure_channel(embedding_addr) as channel:
        client = memoizing_client(channel)
        provider: Provider
        if model_url:
            settings = Settings(
                llm_provider="openai",
                openai_base_url=model_url,
                openai_api_key="none",
                openai_model=MODEL_NAME,
                openai_max_retries=0,
                request_timeout_seconds=300,
            )
            provider = OpenAIProvider.from_context(
                ProviderContext(settings=settings, prompts=load_prompt_library(), embedding=None)
            )
        else:
            provider = LocalProvider(client, Settings().local_answer_threshold)
        for question in qa.questions:
            passages = found[question.id]["passages"]
            sources = [Source(n, text) for n, text in enumerate(passages, 1)]
            completion = await provider.answer(
                AnswerTask(
                    question=question.text,
                    sources=sources,
                    max_tokens=128 if model_url else 512,
                    question_vector=found[question.id]["vector"],
                )
            )
            reply = _CITATION.sub("", completion.text)
            outcomes.append(
                Outcome(
                    question,
                    present=contains("\n".join(passages), question.answers),
                    correct=contains(reply, question.answers),
                    reply=completion.text,
                )
            )
        save_vectors(client)
        await provider.aclose()
    return outcomes


@dataclass(frozen=True)
class Score:
    name: str
    questions: int
    present: float
    correct: float
    correct_when_present: float

    @property
    def ratio(self) -> float:
        return self.correct / self.present if self.present else 0.0


def score(name: str, outcomes: Sequence[Outcome]) -> Score:
    count = len(outcomes)
    present = [o for o in outcomes if o.present]
    return Score(
        name,
        count,
        len(present) / count if count else 0.0,
        sum(o.correct for o in outcomes) / count if count else 0.0,
        sum(o.correct for o in present) / len(present) if present else 0.0,
    )


def table(scores: Sequence[Score], top_k: int) -> str:
    lines = [
        f"| QA set | questions | gold in top-{top_k} passages | correct | ratio | "
        "correct when gold present |",
        "|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {s.name} | {s.questions} | {s.present:.1%} | {s.correct:.1%} | "
        f"{s.ratio:.2f} | {s.correct_when_present:.1%} |"
        for s in scores
    )
    return "\n".join(lines)


def outcome_rows(name: str, outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """One JSON-ready row per question: what was asked, the gold, the reply and grades."""
    return [
        {
            "set": name,
            "id": outcome.question.id,
            "question": outcome.question.text,
            "answers": outcome.question.answers,
            "present": outcome.present,
            "correct": outcome.correct,
            "reply": outcome.reply,
        }
        for outcome in outcomes
    ]


async def run(
    folders: Sequence[Path],
    top_k: int,
    refresh: bool,
    show: int,
    every: int = 1,
    model_url: str | None = None,
) -> tuple[list[Score], list[dict[str, Any]]]:
    """Each set's score, and its questions' outcomes (``outcome_rows``)."""
    from aimesh_embedding.config import Settings as EmbeddingSettings
    from aimesh_embedding.model import load_encoder
    from aimesh_embedding.server import create_server as embedding_server

    embedding_settings = EmbeddingSettings(port=0, host="127.0.0.1", metrics_port=None)
    embedding = embedding_server(embedding_settings, load_encoder(embedding_settings))
    await embedding.start()
    addr = f"127.0.0.1:{embedding.port}"
    data = Path(tempfile.mkdtemp(prefix="bench-answers-"))
    scores = []
    rows: list[dict[str, Any]] = []
    try:
        for folder in folders:
            qa = load(folder)
            kept = KEPT / f"{qa.name}.json"
            digest = qa.digest(top_k)
            cached = json.loads(kept.read_text()) if kept.exists() and not refresh else {}
            if cached.get("digest") == digest:
                found = cached["found"]
            else:
                started = time.perf_counter()
                found = await retrieve(qa, addr, data / qa.name, top_k)
                print(f"{qa.name}: retrieved in {time.perf_counter() - started:.0f} s", flush=True)
                KEPT.mkdir(parents=True, exist_ok=True)
                kept.write_text(json.dumps({"digest": digest, "found": found}))
            if every > 1:  # a deterministic sample: every n-th question
                qa = QaSet(qa.name, qa.corpus, qa.questions[::every])
            outcomes = await answer_all(qa, found, addr, model_url)
            scores.append(score(qa.name, outcomes))
            rows.extend(outcome_rows(qa.name, outcomes))
            misses = [o for o in outcomes if o.present and not o.correct]
            for outcome in misses[:show]:
                print(f"\n--- {outcome.question.id}: {outcome.question.text}")
                print(f"gold: {outcome.question.answers}")
                print(f"reply: {outcome.reply}", flush=True)
    finally:
        await embedding.stop(0)
        shutil.rmtree(data, ignore_errors=True)
    return scores, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sets", nargs="*", type=Path, help="QA set folders (default: tests/data/qa-eval-*)"
    )
    parser.add_argument("--dev-manpages", type=Path, help="build the man-page set here first")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--refresh", action="store_true", help="retrieve again")
    parser.add_argument("--show", type=int, default=0, help="print this many misses per set")
    parser.add_argument("--every", type=int, default=1, help="answer every n-th question only")
    parser.add_argument(
        "--outcomes", type=Path, help="write each question's reply and grades here (JSON lines)"
    )
    parser.add_argument("--doc", action="store_true", help="write the table into benchmarks.md")
    parser.add_argument(
        "--model-url",
        help="answer with the model server at this /v1 URL (the router's openai provider and "
        "QA template) instead of the extractor",
    )
    args = parser.parse_args(argv)
    folders = list(args.sets) or sorted(
        path for path in (ROOT / "tests" / "data").glob("qa-eval-*") if path.is_dir()
    )
    if args.dev_manpages:
        build_manpages(args.dev_manpages)
        folders.append(args.dev_manpages)
    if not folders:
        parser.error("give QA set folders or --dev-manpages")
    scores, rows = asyncio.run(
        run(folders, args.top_k, args.refresh, args.show, args.every, args.model_url)
    )
    if args.outcomes:
        args.outcomes.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    text = table(scores, args.top_k)
    print(text)
    if args.doc and args.model_url:
        write_section("answers-model", "Answer correctness", text)
    elif args.doc:
        write_section("answers-extractive", "Answer correctness", text)


if __name__ == "__main__":
    main()
