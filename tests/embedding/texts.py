"""Texts with a known token count for the all-MiniLM-L6-v2 tokenizer."""

from __future__ import annotations

# Common lowercase words: each is one word piece, and the pieces decode back to the text.
WORDS = ["river", "stone", "light", "garden", "window", "music", "paper", "summer", "forest"]


def words(count: int, start: int = 0) -> str:
    """A text of ``count`` words, i.e. ``count`` tokens plus [CLS] and [SEP]."""
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(count))
