"""Short gold answers: how a reply (or a passage) is checked for one.

A QA dataset may give each query a few acceptable short answers (``answers.jsonl`` beside
``queries.jsonl``, see :func:`load_answers`). A text *contains* a gold answer when the
answer, normalised, occurs in the text, normalised, as a whole token run:

* normalising: Unicode NFKC, case folded, the quote characters ``' " ` \u2018 \u2019
  \u201c \u201d`` removed, every run of whitespace made one space, ends stripped;
* a whole token run: the characters just before and just after the occurrence (if any) are
  not letters, digits, ``_`` or ``-``; so ``-r`` is not found in ``-rf`` or ``--r``,
  ``ValueError`` is found in ``raises ValueError.`` and in ``asyncio.ValueError``, and
  ``8192`` is not found in ``81920``.

The same check serves the dataset builders (a gold answer must be in its document and not in
its question) and ``aimesh eval --qa`` (correct replies, gold answers in the passages).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

ANSWERS_FILE = "answers.jsonl"

_QUOTES = str.maketrans("", "", "'\"`\u2018\u2019\u201c\u201d")
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC, case folded, quotes removed, whitespace collapsed (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_QUOTES)
    return _SPACE.sub(" ", text).strip()


def _is_word(char: str) -> bool:
    return char.isalnum() or char in "_-"


def contains_answer(text: str, answers: Iterable[str]) -> bool:
    """Whether ``text`` contains any of ``answers`` as a whole token run, after normalising."""
    haystack = normalize(text)
    for answer in answers:
        needle = normalize(answer)
        if not needle:
            continue
        start = haystack.find(needle)
        while start >= 0:
            end = start + len(needle)
            before = haystack[start - 1] if start > 0 else " "
            after = haystack[end] if end < len(haystack) else " "
            # A needle that itself starts (ends) with a word character needs a boundary there;
            # one starting with "-" (an option) must not continue a longer option either.
            if not _is_word(before) and not _is_word(after):
                return True
            start = haystack.find(needle, start + 1)
    return False


def load_answers(folder: Path) -> dict[str, list[str]]:
    """``query id -> gold answers`` from ``folder/answers.jsonl`` (one JSON object a line:
    ``{"_id": "q0001", "answers": ["-r", "--recursive"]}``, other keys ignored); empty when
    the file does not exist. Raises ``ValueError`` for a malformed line."""
    path = folder / ANSWERS_FILE
    if not path.is_file():
        return {}
    found: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            query_id = str(row["_id"])
            answers = row["answers"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not an answers row ({error})") from error
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{path}:{number}: answers must be a list of strings")
        kept = [a for a in answers if normalize(a)]
        if not kept:
            raise ValueError(f"{path}:{number}: no non-empty answer")
        found[query_id] = kept
    return found
