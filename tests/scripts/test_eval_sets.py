"""The generated retrieval eval sets: BEIR layout, sizes, queries never verbatim."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from scripts.eval_sets import beir, build, paraphrase, sources

DATA = Path(__file__).resolve().parents[1] / "data"
COMMITTED = [DATA / f"retrieval-eval-{name}" for name in build.COMMITTED_SETS]


def check_layout(folder: Path, documents: int, queries: int) -> beir.BeirSet:
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "README.md"):
        assert (folder / name).is_file(), name
    assert (folder / "qrels" / "test.tsv").read_text().splitlines()[0] == (
        "query-id\tcorpus-id\tscore"
    )
    for line in (folder / "corpus.jsonl").read_text().splitlines():
        assert set(json.loads(line)) == {"_id", "title", "text"}
    loaded = beir.load(folder)
    assert len(loaded.corpus) >= documents
    assert len(loaded.queries) >= queries
    assert set(loaded.qrels) == set(loaded.queries)
    for query_id, relevant in loaded.qrels.items():
        assert relevant
        assert all(doc in loaded.corpus for doc in relevant)
        for doc in relevant:
            title, text = loaded.corpus[doc]
            query = loaded.queries[query_id]
            assert not paraphrase.is_verbatim(query, f"{title}\n{text}"), (query_id, query)
            assert len(query.split()) >= 2
    assert len(set(loaded.queries.values())) >= 0.95 * len(loaded.queries)
    return loaded


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_committed_sets_are_beir_layout_of_the_promised_size(folder: Path) -> None:
    loaded = check_layout(folder, build.MIN_DOCUMENTS, build.MIN_QUERIES)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 400_000, "committed sets stay small"
    assert all(text.strip() for _, text in loaded.corpus.values())


def test_the_original_set_still_loads() -> None:
    loaded = beir.load(DATA / "retrieval-eval")
    assert loaded.name == "original"
    assert len(loaded.queries) == 30


def test_paraphrase_is_deterministic_and_not_verbatim() -> None:
    phrase = "list directory contents"
    first = paraphrase.question(phrase, paraphrase.rng_for(16, "x"))
    assert first == paraphrase.question(phrase, paraphrase.rng_for(16, "x"))
    queries = {paraphrase.question(phrase, paraphrase.rng_for(16, n)) for n in range(20)}
    assert len(queries) > 3
    assert all(not paraphrase.is_verbatim(q, phrase) for q in queries)
    keywords = paraphrase.keyword_query(
        "Heap queue algorithm (a.k.a. priority queue).", paraphrase.rng_for(1)
    )
    assert 2 <= len(keywords.split()) <= 4
    assert "a.k.a" not in keywords


def test_identifier_set_from_the_standard_library_is_reproducible() -> None:
    modules = list(sources.stdlib_modules())
    first = build.build_identifiers(modules, documents=120, queries=40)
    second = build.build_identifiers(modules, documents=120, queries=40)
    assert first.queries == second.queries
    assert first.corpus == second.corpus
    assert len(first.corpus) == 120
    assert len(first.queries) == 40


def test_module_set_builds_long_documents_with_short_queries(tmp_path: Path) -> None:
    built = build.build_modules(list(sources.stdlib_modules()), documents=60, queries=30)
    loaded = check_layout(built.write(tmp_path), 60, 30)
    assert all(len(text) >= 3000 for _, text in loaded.corpus.values())
    assert all(len(q.split()) <= 4 for q in loaded.queries.values())


def test_the_large_variants_are_their_kinds_at_a_larger_size(tmp_path: Path) -> None:
    packages = list(sources.package_modules())
    api = build.build_identifiers(packages, documents=200, queries=60, name="api-identifiers")
    assert api == build.build_identifiers(
        packages, documents=200, queries=60, name="api-identifiers"
    )
    check_layout(api.write(tmp_path), 200, 60)
    # Another name draws another sample: the variant is not the committed set renamed.
    assert api.corpus != build.build_identifiers(packages, documents=200, queries=60).corpus
    assert build.API_IDENTIFIERS_DOCUMENTS > 2 * 620
    assert build.MODULES_LARGE_DOCUMENTS > 600
    assert {"api-identifiers", "modules-large"} <= set(build.GENERATED_SETS)


ROFF = r""".TH DEMOTOOL 1
.SH NAME
demotool \- rearrange the widgets of a demonstration
.SH SYNOPSIS
demotool [OPTION]...
.SH DESCRIPTION
Demotool rearranges widgets. It reads them from standard input.
.SH OPTIONS
.TP
.B \-a, \-\-all
rearrange every widget including the hidden ones
.TP
.B \-q
stay silent
"""


def test_man_pages_parse_into_summary_sections_and_options(tmp_path: Path) -> None:
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    page_file = tmp_path / "demotool.1.gz"
    page_file.write_bytes(gzip.compress(ROFF.encode()))
    page = sources.parse_man(page_file, sources.render_man(page_file))
    assert page is not None
    assert page.name == "demotool(1)"
    assert page.command == "demotool"
    assert page.summary == "rearrange the widgets of a demonstration"
    assert page.section("DESCRIPTION") == [
        "Demotool rearranges widgets. It reads them from standard input."
    ]
    assert [(o.flags, o.description) for o in page.options] == [
        ("-a, --all", "rearrange every widget including the hidden ones"),
        ("-q", "stay silent"),
    ]
    text = build.page_text(page)
    assert text.startswith("demotool - rearrange the widgets")
    assert "-a, --all: rearrange every widget" in text
