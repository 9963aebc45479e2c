"""Chunking of document text."""

from __future__ import annotations

import bisect
import functools
import itertools
import random
import re
import string

import pytest
from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

from aimesh_retrieval.chunking import (
    MARKDOWN_SEPARATORS,
    MAX_CHUNK_CHARS,
    Chunker,
    ChunkingConfig,
    count_tokens,
    model_tokenizer,
)
from scripts.bench.chunking import langchain_reference
from scripts.bench.texts import bench_texts


def test_short_text_is_one_chunk() -> None:
    assert Chunker(800, 120, unit="chars").split("  A short document.\n") == ["A short document."]


def test_blank_text_has_no_chunks() -> None:
    assert Chunker(800, 120, unit="chars").split(" \n\t \n") == []


def test_chunks_respect_size_and_cover_the_text() -> None:
    words = [f"word{i}" for i in range(2000)]
    text = " ".join(words)
    chunks = Chunker(200, 40, unit="chars").split(text)
    assert len(chunks) > 1
    assert all(len(chunk) <= 200 for chunk in chunks)
    seen = {word for chunk in chunks for word in chunk.split()}
    assert seen == set(words)


def test_neighbouring_chunks_overlap() -> None:
    text = " ".join(f"w{i}" for i in range(500))
    chunks = Chunker(100, 30, unit="chars").split(text)
    for left, right in itertools.pairwise(chunks):
        assert right.split()[0] in left.split(), (left, right)


def test_paragraph_boundaries_are_preferred() -> None:
    first = "Alpha paragraph. " * 10
    second = "Beta paragraph. " * 10
    chunks = Chunker(200, 0, unit="chars").split(f"{first.strip()}\n\n{second.strip()}")
    assert chunks == [first.strip(), second.strip()]


def test_unbreakable_text_is_cut_by_characters() -> None:
    chunks = Chunker(50, 10, unit="chars").split("x" * 260)
    assert all(len(chunk) <= 50 for chunk in chunks)
    assert "".join(chunks).count("x") >= 260


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (100, 100), (100, -1)])
def test_invalid_settings(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk_"):
        Chunker(size, overlap, unit="chars")
    assert ChunkingConfig(size, overlap).validate() is not None


def test_config_limits_follow_the_model_window() -> None:
    assert ChunkingConfig().validate() is None
    assert ChunkingConfig(254, 0).validate() is None
    reason = ChunkingConfig(255, 0).validate()
    assert reason == "chunk_size must be between 1 and 254 tokens (got 255)"


def test_token_counts_use_the_model_wordpiece() -> None:
    # [CLS]/[SEP] excluded; "photosynthesis" is split into several word pieces.
    assert count_tokens("the cat") == 2
    assert count_tokens("photosynthesis") > 1
    assert count_tokens("") == 0


def test_token_chunks_respect_the_token_budget_and_overlap() -> None:
    text = " ".join(f"Sentence {i} tells of photosynthesis in leaves." for i in range(200))
    chunks = Chunker(60, 12).split(text)
    assert len(chunks) > 10
    assert all(count_tokens(chunk) <= 60 for chunk in chunks)
    # Token-sized chunks are not character-sized: a 60-token chunk has far over 60 chars.
    assert max(len(chunk) for chunk in chunks) > 150
    for left, right in itertools.pairwise(chunks):
        assert right.split()[0] in left.split(), (left, right)
    covered = {word for chunk in chunks for word in chunk.split()}
    assert covered == set(text.split())


def test_markdown_mode_prefers_headings() -> None:
    section = "Some words about the topic at hand. " * 6
    text = f"# Intro\n\n{section}\n## Usage\n\n{section}\n## Limits\n\n{section}"
    chunks = Chunker(70, 0, markdown=True).split(text)
    assert [chunk.splitlines()[0] for chunk in chunks] == ["# Intro", "## Usage", "## Limits"]


def test_long_unbroken_run_is_cut_to_storable_chunks() -> None:
    chunks = Chunker(200, 0).split("x" * 40_000)
    assert all(len(chunk) <= 16_000 for chunk in chunks)
    assert sum(len(chunk) for chunk in chunks) >= 40_000


# Properties on real-looking texts. Chunks are placed back in the text to check coverage and
# overlap: each chunk at its last occurrence that leaves no text uncovered before it (the
# texts are random enough that a chunk's place is not ambiguous).

SIZES = [(200, 32), (60, 12), (7, 3), (1, 0)]


def _letters(rng: random.Random, n: int, alphabet: str = string.ascii_lowercase) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


@functools.cache
def _texts() -> dict[str, str]:
    rng = random.Random(7)
    sentences = bench_texts(400)

    def paragraph(most: int) -> str:
        return " ".join(rng.choice(sentences) for _ in range(rng.randint(1, most)))

    sections = []
    for i in range(30):
        section = f"{'#' * rng.randint(1, 3)} Section {i}\n\n{paragraph(10)}"
        if i % 3 == 0:
            section += f"\n\n```python\ndef f{i}(x):\n    return x * {i}\n```\n"
        if i % 4 == 0:
            section += "\n---\n"
        sections.append(section)
    return {
        "prose": "\n\n".join(paragraph(8) for _ in range(40)),
        "markdown": "\n\n".join(sections),
        "long runs": " ".join(
            [
                "start",
                _letters(rng, 300),
                "photosynthesis" * 3,
                _letters(rng, 16_050),  # one [UNK] token; its last 50 letters take many alone
                paragraph(3),
                _letters(rng, 20_000, "éèêàçüö"),
                _letters(rng, 40_000),
                "end.",
            ]
        ),
        "unicode": _letters(rng, 2_000, "中文字符数据检索日本語のテキスト한국어 ")
        + " naïve café "
        + _letters(rng, 500, "😀🚀✨ αβγδ ")
        + " "
        + paragraph(4),
        "short lines": "\n".join(f"key{i}: value {rng.randint(0, 10**6)}" for i in range(2_000)),
        "glued words": "".join(rng.choice(sentences).replace(" ", "") for _ in range(120)),
    }


def _place(text: str, chunks: list[str]) -> list[tuple[int, int]]:
    """Where each chunk sits in ``text``; fails if some non-blank text is in no chunk."""
    places: list[tuple[int, int]] = []
    start, end = -1, 0
    for chunk in chunks:
        assert chunk
        assert chunk == chunk.strip()
        # The next chunk starts after the last one's start and at or before the first
        # non-blank character after its end.
        limit = end + len(text[end:]) - len(text[end:].lstrip())
        found = text.rfind(chunk, start + 1, limit + len(chunk))
        assert found >= 0, f"text lost before {chunk[:60]!r}"
        start, end = found, found + len(chunk)
        places.append((start, end))
    assert not text[end:].strip(), "text lost at the end"
    return places


def _overlaps(text: str, places: list[tuple[int, int]]) -> list[int]:
    """Tokens (of the whole text's tokenization) shared by each pair of neighbours."""
    offsets = model_tokenizer().encode(text, add_special_tokens=False).offsets
    starts = [start for start, _ in offsets]
    ends = [end for _, end in offsets]
    return [
        max(0, bisect.bisect_right(ends, left_end) - bisect.bisect_left(starts, right_start))
        for (_, left_end), (right_start, _) in itertools.pairwise(places)
    ]


def _alone(chunks: list[str]) -> list[int]:
    return [len(e.ids) for e in model_tokenizer().encode_batch(chunks, add_special_tokens=False)]


@pytest.mark.parametrize(("size", "overlap"), SIZES)
@pytest.mark.parametrize(
    "name", ["prose", "markdown", "long runs", "unicode", "short lines", "glued words"]
)
def test_chunks_keep_to_the_budget_cover_the_text_and_overlap_little(
    name: str, size: int, overlap: int
) -> None:
    text = _texts()[name]
    chunks = Chunker(size, overlap, markdown=name == "markdown").split(text)
    # Each chunk tokenized on its own; only a character is never cut (a Hangul syllable
    # is three tokens).
    over = [chunk for chunk, n in zip(chunks, _alone(chunks), strict=True) if n > size]
    assert all(len(chunk) == 1 for chunk in over), over[:3]
    assert max(len(chunk) for chunk in chunks) <= MAX_CHUNK_CHARS
    shared = _overlaps(text, _place(text, chunks))
    assert max(shared, default=0) <= overlap
    if overlap and len(chunks) > 10 and name != "long runs":
        assert max(shared) > 0  # the overlap is there


def test_budget_is_used() -> None:
    # Chunks are not needlessly small: all but the last of a paragraph-free text come
    # within a word of the size.
    text = _texts()["prose"].replace("\n\n", " ")
    counts = _alone(Chunker(200, 32).split(text))
    assert min(counts[:-1]) >= 180


def test_a_word_cut_for_storage_is_split_again_when_its_rest_takes_more_tokens() -> None:
    rng = random.Random(1)
    word = _letters(rng, MAX_CHUNK_CHARS + 60)
    assert count_tokens(word) == 1  # over 100 characters: one unknown token
    chunks = Chunker(5, 0).split(word)
    assert count_tokens(word[MAX_CHUNK_CHARS:]) > 5  # what was cut off needs splitting
    assert max(_alone(chunks)) <= 5
    assert "".join(chunks) == word


def test_markdown_sections_that_fit_stay_whole_and_chunks_start_at_headings() -> None:
    text = _texts()["markdown"]
    size = 200
    heading = re.compile(r"^#{1,6} ", re.MULTILINE)
    starts = [match.start() for match in heading.finditer(text)]
    sections = [
        (a, a + len(text[a:b].rstrip())) for a, b in itertools.pairwise([*starts, len(text)])
    ]
    places = _place(text, Chunker(size, 32, markdown=True).split(text))
    oversized = [(a, b) for a, b in sections if count_tokens(text[a:b]) > size]
    assert 0 < len(oversized) < len(sections) // 2
    for a, b in sections:
        if (a, b) not in oversized:
            assert any(start <= a and b <= end for start, end in places), text[a:b][:60]
    for start, _ in places:
        inside_big = any(a < start < b for a, b in oversized)
        assert start in starts or inside_big, text[start : start + 60]


@pytest.mark.parametrize("markdown", [False, True])
def test_agrees_with_the_langchain_splitter_it_replaced(markdown: bool) -> None:
    name = "markdown" if markdown else "prose"
    texts = [_texts()[name], _texts()["short lines"], _texts()["prose"].replace("\n\n", " ")]
    for config in [ChunkingConfig(200, 32, markdown), ChunkingConfig(60, 12, markdown)]:
        reference = langchain_reference(config)
        for text in texts:
            old, new = reference(text), Chunker.from_config(config).split(text)
            assert abs(len(new) - len(old)) <= 0.15 * len(old)
            assert len(set(old) & set(new)) >= 0.9 * len(old)


def test_split_many_equals_split_one_by_one() -> None:
    texts = [*_texts().values(), "", "  ", "one"]
    chunker = Chunker(60, 12)
    assert chunker.split_many(texts) == [chunker.split(text) for text in texts]


def test_a_long_document_tokenized_in_parallel_parts_splits_as_a_whole() -> None:
    # The text is tokenized in parts of about 25,000 characters, over several calls; the
    # chunks stay those of the reference that tokenizes every piece whole.
    prose = _texts()["prose"]
    text = " ".join([prose] * (250_000 // len(prose) + 1))
    config = ChunkingConfig(200, 32)
    assert Chunker.from_config(config).split(text) == langchain_reference(config)(text)


def test_markdown_separators_are_langchains() -> None:
    separators = RecursiveCharacterTextSplitter.get_separators_for_language(Language.MARKDOWN)
    assert [*MARKDOWN_SEPARATORS, ""] == separators


def test_chars_unit_counts_characters() -> None:
    text = _texts()["prose"]
    chunks = Chunker(300, 50, unit="chars").split(text)
    assert max(len(chunk) for chunk in chunks) <= 300
    _place(text, chunks)
    reference = langchain_reference(ChunkingConfig(300, 50, unit="chars"))(text)
    assert abs(len(chunks) - len(reference)) <= 0.15 * len(reference)
