"""Splitting documents into overlapping chunks for embedding."""

from __future__ import annotations

from langchain_text_splitters import RecursiveCharacterTextSplitter


class Chunker:
    """Recursive character splitting: paragraphs first, then lines, words, characters.

    Every chunk is at most ``chunk_size`` characters, and neighbouring chunks share up to
    ``chunk_overlap`` characters so a sentence cut at a boundary is still found whole in
    one of them. Leading and trailing whitespace of chunks is stripped.
    """

    def __init__(self, chunk_size: int, chunk_overlap: int) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        if not 0 <= chunk_overlap < chunk_size:
            raise ValueError("chunk_overlap must be in [0, chunk_size)")
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_size, chunk_overlap=chunk_overlap
        )

    def split(self, text: str) -> list[str]:
        """The chunks of ``text`` in order; empty only for blank text."""
        return [chunk for chunk in self._splitter.split_text(text) if chunk.strip()]
