"""Splitting documents into overlapping chunks for embedding.

Sizes are counted in tokens of the embedding model's own tokenizer (all-MiniLM-L6-v2's
WordPiece, shipped as ``data/all-MiniLM-L6-v2.tokenizer.json`` and read with the
``tokenizers`` library, so the service never imports torch). The model sees at most 256
tokens including ``[CLS]`` and ``[SEP]``; the defaults (200 tokens, 32 overlap) leave
room so that no chunk is silently truncated by the embedding service.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from langchain_text_splitters import Language, RecursiveCharacterTextSplitter
from tokenizers import Tokenizer

DEFAULT_CHUNK_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 32
# The model's window minus [CLS] and [SEP].
MAX_CHUNK_TOKENS = 254
# A chunk is stored in a VARCHAR(65535); 16,000 characters stay below it even when every
# character takes four bytes. One WordPiece token can stand for a long unknown "word".
MAX_CHUNK_CHARS = 16_000

Unit = Literal["tokens", "chars"]


@functools.cache
def model_tokenizer() -> Tokenizer:
    """all-MiniLM-L6-v2's tokenizer, without the padding and truncation its file enables."""
    path = resources.files("aimesh_retrieval") / "data" / "all-MiniLM-L6-v2.tokenizer.json"
    tokenizer = Tokenizer.from_str(path.read_text(encoding="utf-8"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count_tokens(text: str) -> int:
    """Tokens of ``text`` for the embedding model, special tokens excluded."""
    return len(model_tokenizer().encode(text, add_special_tokens=False).ids)


@dataclass(frozen=True)
class ChunkingConfig:
    """How a collection splits its documents (stored with the collection)."""

    chunk_size: int = DEFAULT_CHUNK_TOKENS
    chunk_overlap: int = DEFAULT_OVERLAP_TOKENS
    markdown: bool = False
    unit: Unit = "tokens"

    def validate(self) -> str | None:
        """A readable reason why the settings are unusable, or None."""
        limit = MAX_CHUNK_TOKENS if self.unit == "tokens" else MAX_CHUNK_CHARS
        if not 1 <= self.chunk_size <= limit:
            return f"chunk_size must be between 1 and {limit} {self.unit} (got {self.chunk_size})"
        if not 0 <= self.chunk_overlap < self.chunk_size:
            return (
                f"chunk_overlap must be at least 0 and smaller than chunk_size "
                f"(got {self.chunk_overlap} with chunk_size {self.chunk_size})"
            )
        return None


class Chunker:
    """Recursive splitting: paragraphs first, then lines, words, characters.

    Every chunk is at most ``chunk_size`` units (tokens by default) and neighbouring
    chunks share up to ``chunk_overlap`` units, so a sentence cut at a boundary is still
    found whole in one of them. With ``markdown`` the splitter prefers headings, code
    fences and horizontal rules as boundaries. Surrounding whitespace is stripped.
    """

    def __init__(
        self,
        chunk_size: int,
        chunk_overlap: int,
        *,
        markdown: bool = False,
        unit: Unit = "tokens",
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        if not 0 <= chunk_overlap < chunk_size:
            raise ValueError("chunk_overlap must be in [0, chunk_size)")
        self.config = ChunkingConfig(chunk_size, chunk_overlap, markdown, unit)
        length = count_tokens if unit == "tokens" else len
        separators = (
            RecursiveCharacterTextSplitter.get_separators_for_language(Language.MARKDOWN)
            if markdown
            else None
        )
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            length_function=length,
            separators=separators,
            is_separator_regex=markdown,
        )

    @classmethod
    def from_config(cls, config: ChunkingConfig) -> Chunker:
        return cls(
            config.chunk_size, config.chunk_overlap, markdown=config.markdown, unit=config.unit
        )

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    @property
    def chunk_overlap(self) -> int:
        return self.config.chunk_overlap

    def split(self, text: str) -> list[str]:
        """The chunks of ``text`` in order; empty only for blank text."""
        chunks: list[str] = []
        for chunk in self._splitter.split_text(text):
            chunk = chunk.strip()
            # A run of characters the tokenizer maps to few tokens can exceed storage.
            chunks.extend(
                piece
                for start in range(0, len(chunk), MAX_CHUNK_CHARS)
                if (piece := chunk[start : start + MAX_CHUNK_CHARS].strip())
            )
        return chunks
