"""Benchmark texts: real English sentences of mixed length, from Python's own documentation.

``pydoc_data.topics`` ships with every CPython: the language reference as plain text. Most
texts are single sentences (4-60 words); one in twenty-five is a whole paragraph (80-300 words),
so the set is mostly short with a few long ones, like real embedding traffic. Nothing is
repeated, and the selection is deterministic for a given Python version.
"""

from __future__ import annotations

import random
import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PROSE = re.compile(r"^[A-Z][^>]*[.!?:]$")


def _paragraphs() -> list[str]:
    from pydoc_data.topics import topics

    paragraphs: list[str] = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            lines = [line.strip() for line in block.splitlines()]
            if not lines or any(line.startswith((">>>", "...", "*", "|", "-")) for line in lines):
                continue
            text = " ".join(lines)
            if block.startswith(("   ", "\t")) and ":" in text[:40]:
                continue  # indented grammar or code
            text = re.sub(r"\s+", " ", text.replace("*", "")).strip()
            letters = sum(char.isalpha() or char == " " for char in text)
            if _PROSE.match(text) and letters >= 0.9 * len(text):
                paragraphs.append(text)
    return paragraphs


def bench_texts(count: int = 1000, seed: int = 13, long_share: float = 0.04) -> list[str]:
    """``count`` distinct texts, about ``long_share`` of them long paragraphs."""
    paragraphs = _paragraphs()
    sentences: list[str] = []
    seen: set[str] = set()
    for paragraph in paragraphs:
        for sentence in _SENTENCE_END.split(paragraph):
            if 4 <= len(sentence.split()) <= 60 and sentence not in seen:
                seen.add(sentence)
                sentences.append(sentence)
    long_ones = sorted({p for p in paragraphs if 80 <= len(p.split()) <= 300 and p not in seen})
    rng = random.Random(seed)
    rng.shuffle(sentences)
    rng.shuffle(long_ones)
    n_long = round(count * long_share)
    chosen = sentences[: count - n_long] + long_ones[:n_long]
    if len(chosen) < count:
        raise RuntimeError(f"only {len(chosen)} texts available, {count} asked")
    rng.shuffle(chosen)
    return chosen
