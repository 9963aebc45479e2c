"""Token usage and a provider-independent token estimate.

The estimate counts words and punctuation marks. It is used where a provider reports no
usage (the local provider, some OpenAI-compatible servers) and for packing sources into a
context window, where it is applied with a safety margin. No tokenizer download is needed,
which matters on machines without internet access.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Rough token count: one per word and one per punctuation mark."""
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class Usage:
    """Token counts of one model call."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def estimate(cls, prompt: str, completion: str) -> Usage:
        return cls(estimate_tokens(prompt), estimate_tokens(completion), estimated=True)


NO_USAGE = Usage(0, 0, estimated=False)
