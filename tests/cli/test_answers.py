"""Short gold answers: normalising, whole-token matching and answers.jsonl, by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aimesh_cli.answers import contains_answer, load_answers, normalize


def test_normalize_folds_case_quotes_and_whitespace() -> None:
    assert normalize("  The  `utf-8`\n codec ") == "the utf-8 codec"
    assert normalize("\u201cStrict\u201d") == "strict"
    assert normalize("'Set-Cookie:'") == "set-cookie:"
    assert normalize("\uff21BC") == "abc"  # NFKC: full-width A
    assert normalize(" ' ") == ""


def test_contains_answer_matches_whole_tokens_only() -> None:
    assert contains_answer("It raises ValueError if called twice [1].", ["ValueError"])
    assert contains_answer("raises valueerror.", ["ValueError"])
    assert contains_answer("see asyncio.IncompleteReadError", ["IncompleteReadError"])
    assert not contains_answer("raises ValueErrors", ["ValueError"])
    assert not contains_answer("a MyValueError", ["ValueError"])
    # Options: not a prefix of a longer flag, nor the tail of a long option.
    assert contains_answer("Use -r, --recursive to descend.", ["-r"])
    assert contains_answer("Use --recursive=yes", ["--recursive"])
    assert not contains_answer("rm -rf /tmp/x", ["-r"])
    assert not contains_answer("the --r option", ["-r"])
    assert not contains_answer("--recursive-only", ["--recursive"])
    # Numbers: not part of a longer number.
    assert contains_answer("maxsize=128, typed=False", ["128"])
    assert not contains_answer("buffer of 1280 bytes", ["128"])
    # Quotes around the answer or in the reply do not matter; any variant is enough.
    assert contains_answer("encoding='utf-8'", ["utf-8"])
    assert contains_answer("default \u201cstrict\u201d", ["'strict'"])
    assert contains_answer("no", ["x", "No"])
    assert not contains_answer("anything", [])
    assert not contains_answer("anything", ["", "  "])
    # A later occurrence counts when an earlier one is not a whole token.
    assert contains_answer("-rf or -r", ["-r"])


def test_load_answers(tmp_path: Path) -> None:
    assert load_answers(tmp_path) == {}
    rows = [
        {"_id": "q1", "answers": ["-r", "--recursive"], "kind": "option"},
        {"_id": 2, "answers": ["KeyError", " "]},
    ]
    (tmp_path / "answers.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8"
    )
    assert load_answers(tmp_path) == {"q1": ["-r", "--recursive"], "2": ["KeyError"]}
    for bad, message in (
        ('{"_id": "q1"}', "not an answers row"),
        ("not json", "not an answers row"),
        ('{"_id": "q1", "answers": "x"}', "list of strings"),
        ('{"_id": "q1", "answers": [""]}', "no non-empty answer"),
    ):
        (tmp_path / "answers.jsonl").write_text(bad + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            load_answers(tmp_path)
