"""Text deltas from token ids: stop strings cut, partial ones held back, characters whole."""

from __future__ import annotations

from collections.abc import Sequence

from aimesh_model_server.api import TextAssembler

# A toy tokenizer: each id is one piece of text.
PIECES = {1: "Hel", 2: "lo", 3: " wor", 4: "ld", 5: "!", 6: " EN", 7: "D", 8: " x"}


def _decode(ids: Sequence[int]) -> str:
    return "".join(PIECES[i] for i in ids)


def _run(tokens: list[int], stops: list[str]) -> tuple[list[str], TextAssembler]:
    assembler = TextAssembler(_decode, stops)
    deltas = []
    for token in tokens:
        deltas.append(assembler.push(token))
        if assembler.stopped:
            break
    deltas.append(assembler.flush())
    return deltas, assembler


def test_without_stops_every_piece_is_emitted_at_once() -> None:
    deltas, assembler = _run([1, 2, 3, 4], [])
    assert deltas == ["Hel", "lo", " wor", "ld", ""]
    assert not assembler.stopped


def test_a_stop_split_across_tokens_never_shows() -> None:
    deltas, assembler = _run([1, 2, 6, 7, 8], [" END"])
    assert "".join(deltas) == "Hello"
    assert assembler.stopped
    # " EN" could begin " END": it was held back, not emitted and then taken back.
    assert deltas[2] == ""


def test_a_held_back_prefix_that_was_no_stop_is_emitted_later() -> None:
    deltas, assembler = _run([1, 2, 6, 8], [" END"])
    assert "".join(deltas) == "Hello EN x"
    assert not assembler.stopped


def test_a_held_back_prefix_is_flushed_at_the_end() -> None:
    deltas, _ = _run([1, 2, 6], [" END"])
    assert deltas[-1] == " EN"
    assert "".join(deltas) == "Hello EN"


def test_the_earliest_of_several_stops_wins() -> None:
    deltas, assembler = _run([1, 2, 3, 4, 5], ["ld", "wor"])
    assert "".join(deltas) == "Hello "
    assert assembler.stopped


BYTES = {1: b"caf", 2: b"\xc3", 3: b"\xa9", 4: b"!"}


def _decode_bytes(ids: Sequence[int]) -> str:
    return b"".join(BYTES[i] for i in ids).decode("utf-8", errors="replace")


def test_an_unfinished_character_waits_for_its_bytes() -> None:
    assembler = TextAssembler(_decode_bytes, [])
    pushed = [assembler.push(1), assembler.push(2), assembler.push(3), assembler.push(4)]
    assert pushed == ["caf", "", "é", "!"]


def test_an_unfinished_character_at_the_end_is_flushed_as_it_is() -> None:
    assembler = TextAssembler(_decode_bytes, [])
    assert [assembler.push(1), assembler.push(2)] == ["caf", ""]
    assert assembler.flush() == "\ufffd"


def test_each_token_decodes_a_short_window() -> None:
    """A long reply is not decoded whole for every token (linear, not quadratic)."""
    longest = 0

    def decode(ids: Sequence[int]) -> str:
        nonlocal longest
        longest = max(longest, len(ids))
        return _decode(ids)

    assembler = TextAssembler(decode, ["never"])
    text = "".join(assembler.push(1 + i % 5) for i in range(2000)) + assembler.flush()
    assert text == "".join(PIECES[1 + i % 5] for i in range(2000))
    assert longest <= 3
