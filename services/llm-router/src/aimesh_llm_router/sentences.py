"""Sentence splitting for the extractive (local) provider.

Deliberately simple and dependency-free: paragraphs and list items are split on line
breaks, then on sentence-final punctuation followed by a capital letter, digit or quote,
unless the word before is a common abbreviation.
"""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "inc",
        "ltd",
        "co",
        "no",
        "fig",
        "approx",
        "cf",
        "al",
        "u.s",
    }
)
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
_SPACES = re.compile(r"\s+")


def _pieces(paragraph: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(paragraph):
        candidate = paragraph[start : match.start()]
        last_word = candidate.rsplit(maxsplit=1)[-1] if candidate.split() else ""
        stem = last_word.rstrip(".!?\"')]").lower()
        if stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha()):
            continue
        sentences.append(paragraph[start : match.end()])
        start = match.end()
    sentences.append(paragraph[start:])
    return [_SPACES.sub(" ", sentence).strip() for sentence in sentences]


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` in order, whitespace normalized, empty ones dropped."""
    result: list[str] = []
    # A blank line or a list item starts a new paragraph; other line breaks are wrapping.
    paragraph: list[str] = []
    paragraphs: list[str] = []
    for line in text.splitlines():
        if not line.strip() or _BULLET.match(line):
            if paragraph:
                paragraphs.append(" ".join(paragraph))
            paragraph = [_BULLET.sub("", line)] if line.strip() else []
        else:
            paragraph.append(line)
    if paragraph:
        paragraphs.append(" ".join(paragraph))
    for block in paragraphs:
        result.extend(piece for piece in _pieces(block) if any(c.isalnum() for c in piece))
    return result
