"""Read a BEIR-layout folder: corpus.jsonl, queries.jsonl, qrels/test.tsv (with a header)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BeirSet:
    name: str
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load(folder: Path) -> BeirSet:
    def rows(path: Path) -> list[dict[str, str]]:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    corpus = {
        str(r["_id"]): (str(r.get("title") or ""), str(r.get("text") or ""))
        for r in rows(folder / "corpus.jsonl")
    }
    queries = {str(r["_id"]): str(r.get("text") or "") for r in rows(folder / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    lines = (folder / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    for line in lines[1:]:
        if line.strip():
            query_id, doc_id, score = line.split("\t")
            qrels.setdefault(query_id, {})[doc_id] = int(score)
    name = (
        folder.name.removeprefix("retrieval-eval-")
        if folder.name != "retrieval-eval"
        else "original"
    )
    return BeirSet(name, corpus, queries, qrels)
