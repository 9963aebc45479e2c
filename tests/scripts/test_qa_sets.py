"""The QA eval sets: BEIR layout plus answers.jsonl, short gold answers that their document
holds and their question does not give away; the extraction helpers by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aimesh_cli.answers import contains_answer, load_answers
from scripts.eval_sets import qa, sources
from tests.scripts.test_eval_sets import check_layout

DATA = Path(__file__).resolve().parents[1] / "data"
COMMITTED = [DATA / f"qa-eval-{name}" for name in qa.QA_SETS]


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_committed_qa_sets_have_short_gold_answers_in_their_documents(folder: Path) -> None:
    loaded = check_layout(folder, qa.MIN_DOCUMENTS, qa.MIN_QUERIES)
    answers = load_answers(folder)
    assert set(answers) == set(loaded.queries)
    kinds = {json.loads(line)["kind"] for line in (folder / "answers.jsonl").open()}
    assert kinds <= {"option", "exception", "default", "parameter"}
    for query_id, gold in answers.items():
        assert all(1 <= len(a.split()) <= 4 and len(a) <= 40 for a in gold), gold
        (doc_id,) = loaded.qrels[query_id]
        title, text = loaded.corpus[doc_id]
        assert contains_answer(f"{title}\n{text}", gold), (query_id, gold)
        assert not contains_answer(loaded.queries[query_id], gold), (query_id, gold)
    lengths = sorted(len(text) for _, text in loaded.corpus.values())
    assert lengths[len(lengths) // 2] >= 2000, "long-ish documents: several chunks each"
    # Questions spread over documents: at most two on any one.
    per_document: dict[str, int] = {}
    for relevant in loaded.qrels.values():
        for doc in relevant:
            per_document[doc] = per_document.get(doc, 0) + 1
    assert max(per_document.values()) <= 2
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 2_500_000, "committed sets stay small"


def test_option_flags() -> None:
    assert qa.option_flags("-o, --output=FILE") == ["-o", "--output"]
    assert qa.option_flags("--color[=WHEN]") == ["--color"]
    assert qa.option_flags("-inform DER|PEM") == ["-inform"]
    assert qa.option_flags("-r, -R, --recursive") == ["-r", "-R", "--recursive"]
    assert qa.option_flags("-") == []


def test_parameter_defaults_keep_literals_worth_asking() -> None:
    signature = "(a, b=8192, /, c='utf-8', d=None, e=True, f=1, g=-40, *, h='x', i=2.5, j=os.sep)"
    assert qa.parameter_defaults(signature) == [
        ("b", "8192"),
        ("c", "'utf-8'"),
        ("g", "-40"),
        ("i", "2.5"),
    ]
    assert qa.parameter_defaults("(not valid") == []


NUMPY_DOC = """Sort an array.

Parameters
----------
a : array_like
    Array to be sorted.
axis : int or None, optional
    Axis along which to sort. If None, the array is
    flattened before sorting.
x, y : int
    Left out: two names.

Returns
-------
sorted : ndarray
    Array of the same type.

Raises
------
ValueError
    If the axis is out of range.
"""


def test_parameter_descriptions_numpy_sphinx_google() -> None:
    assert qa.parameter_descriptions(NUMPY_DOC) == [
        ("a", "Array to be sorted."),
        ("axis", "Axis along which to sort. If None, the array is flattened before sorting."),
    ]  # x, y: two names, left out
    sphinx = (
        "Connect.\n\n:param host: the name of the\n    server to reach\n:param int port: its port\n"
    )
    assert qa.parameter_descriptions(sphinx) == [
        ("host", "the name of the server to reach"),
        ("port", "its port"),
    ]
    google = (
        "Load.\n\nArgs:\n    path (str): Where the file is.\n    strict: Fail on\n"
        "        errors.\n\nReturns:\n    x\n"
    )
    assert qa.parameter_descriptions(google) == [
        ("path", "Where the file is."),
        ("strict", "Fail on errors."),
    ]


def test_raised_exceptions_need_one_exception_and_a_condition() -> None:
    assert qa.raised_exceptions(NUMPY_DOC) == [
        ("ValueError", "If the axis is out of range."),
    ]
    doc = "Remove the keyed message; raise KeyError if it doesn't exist."
    assert qa.raised_exceptions(doc) == [("KeyError", "if it doesn't exist")]
    assert qa.raised_exceptions("Raise TypeError or ValueError if bad.") == []
    assert qa.raised_exceptions("Return a bytes representation or raise a KeyError.") == []


@pytest.mark.slow
def test_api_set_is_reproducible_and_answerable(tmp_path: Path) -> None:
    modules = list(sources.stdlib_modules())
    first = qa.build_api(modules, documents=80, queries=40)
    second = qa.build_api(modules, documents=80, queries=40)
    assert first.queries == second.queries
    assert first.answers == second.answers
    assert len(first.corpus) == 80
    assert len(first.queries) == 40
    assert len(set(first.kinds.values())) == 3
    folder = first.write(tmp_path)
    assert load_answers(folder) == first.answers
    assert "answers.jsonl" in (folder / "README.md").read_text()


def _page(number: int) -> sources.ManPage:
    filler = [
        f"Paragraph {n} about widget number {number}, which is plain text." * 3 for n in range(12)
    ]
    options = [
        sources.ManOption(
            f"-q, --quiet-{number}", f"keep widget {number} quiet while sorting all the parts"
        ),
        sources.ManOption("-v", "print every widget name on the terminal as it goes by"),
        sources.ManOption("-V", "show the version and exit"),  # collides with -v, case folded
        sources.ManOption("--same", "synonym for --quiet"),
    ]
    paragraphs = filler[:6] + [f"{o.flags}: {o.description}" for o in options] + filler[6:]
    return sources.ManPage(
        f"widget{number}(1)", f"handle widgets {number}", [("DESCRIPTION", paragraphs)], options
    )


def test_options_set_asks_for_the_flags_of_unique_descriptions() -> None:
    built = qa.build_options([_page(n) for n in range(8)], documents=8, queries=6)
    assert len(built.corpus) == 8
    assert len(built.queries) == 6
    for query_id, gold in built.answers.items():
        number = int(built.corpus[built.qrels[query_id]][0].removeprefix("widget").split("(")[0])
        # -v and -V collide and --same is defined by another option: only --quiet-N is asked.
        assert gold == ["-q", f"--quiet-{number}"]
        assert "quiet" in built.queries[query_id] or "silent" in built.queries[query_id]
