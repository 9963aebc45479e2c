"""Numbered sources for question answering, and the citations a model makes to them.

Sources are numbered from 1 in retrieval order (best first) and packed into a token
budget. After generation, bracketed numbers in the answer ("[2]", "[1, 3]", "[1][3]") are
parsed; numbers that were never given to the model are removed from the text, so the
answer only ever points at sources the caller receives as citations.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from aimesh_llm_router.tokens import estimate_tokens

# "[1]", "[1, 2]", "[1,2 ,3]": one bracket group of source numbers.
_CITATION = re.compile(r"\[\s*(\d{1,4}(?:\s*,\s*\d{1,4})*)\s*\]")
# A group that cites nothing valid is removed together with the blank before it.
_SPACE_BEFORE = re.compile(r"[ \t]+$")
_WORDS = re.compile(r"\S+\s*")


@dataclass(frozen=True)
class Source:
    """A passage given to the model under ``number``."""

    number: int
    text: str


def render_sources(sources: Sequence[Source]) -> str:
    """The ``sources`` variable of the qa template: ``[n] text`` blocks."""
    return "\n\n".join(f"[{source.number}] {source.text.strip()}" for source in sources)


def _truncate_words(text: str, max_tokens: int) -> str:
    kept: list[str] = []
    used = 0
    for word in _WORDS.findall(text):
        cost = estimate_tokens(word)
        if used + cost > max_tokens:
            break
        kept.append(word)
        used += cost
    return "".join(kept).rstrip()


def pack_sources(texts: Sequence[str], budget_tokens: int) -> list[Source]:
    """Number ``texts`` from 1 and keep as many as fit in ``budget_tokens``.

    Source ``n`` is ``texts[n - 1]``, so callers can map citations back to what they
    passed in. Texts come best first, so the budget drops the weakest. When even the first does not
    fit it is truncated, so a question is never answered from no sources at all just
    because one chunk is long.
    """
    sources: list[Source] = []
    used = 0
    for text in texts:
        stripped = text.strip()
        # "[n] " and the blank line between blocks cost a few tokens too.
        cost = estimate_tokens(stripped) + 4
        if used + cost > budget_tokens:
            if not sources and budget_tokens > 4:
                truncated = _truncate_words(stripped, budget_tokens - 4)
                if truncated:
                    sources.append(Source(1, truncated))
            break
        sources.append(Source(len(sources) + 1, stripped))
        used += cost
    return sources


@dataclass(frozen=True)
class CitedAnswer:
    """An answer with invalid citations removed, and the source numbers it cites."""

    text: str
    cited: tuple[int, ...]


def filter_citations(answer: str, valid: Sequence[int] | set[int]) -> CitedAnswer:
    """Keep citations of ``valid`` source numbers; drop the others from the text.

    ``cited`` lists the valid numbers the answer uses, ascending and without repeats.
    """
    allowed = set(valid)
    cited: set[int] = set()
    parts: list[str] = []
    position = 0
    for match in _CITATION.finditer(answer):
        parts.append(answer[position : match.start()])
        position = match.end()
        numbers = [int(number) for number in re.split(r"\s*,\s*", match.group(1))]
        kept = list(dict.fromkeys(number for number in numbers if number in allowed))
        if kept:
            cited.update(kept)
            parts.append("[" + ", ".join(str(number) for number in kept) + "]")
        elif parts:
            parts[-1] = _SPACE_BEFORE.sub("", parts[-1])
    parts.append(answer[position:])
    text = "".join(parts).strip()
    return CitedAnswer(text=text, cited=tuple(sorted(cited)))


def citations_valid(answer: str, valid: Sequence[int] | set[int]) -> bool:
    """Whether ``answer`` cites at least one source and only sources of ``valid``.

    A grounded answer from a model is kept only when this holds; otherwise the router
    replaces it with the extractive answer (which quotes its sources by construction).
    """
    allowed = set(valid)
    numbers = [
        int(number)
        for match in _CITATION.finditer(answer)
        for number in re.split(r"\s*,\s*", match.group(1))
    ]
    return bool(numbers) and all(number in allowed for number in numbers)
