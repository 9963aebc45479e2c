"""Chunking of document text."""

from __future__ import annotations

import itertools

import pytest

from aimesh_retrieval.chunking import Chunker, ChunkingConfig, count_tokens


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
