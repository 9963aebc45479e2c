"""Chunking of document text."""

from __future__ import annotations

import itertools

import pytest

from aimesh_retrieval.chunking import Chunker


def test_short_text_is_one_chunk() -> None:
    assert Chunker(800, 120).split("  A short document.\n") == ["A short document."]


def test_blank_text_has_no_chunks() -> None:
    assert Chunker(800, 120).split(" \n\t \n") == []


def test_chunks_respect_size_and_cover_the_text() -> None:
    words = [f"word{i}" for i in range(2000)]
    text = " ".join(words)
    chunks = Chunker(200, 40).split(text)
    assert len(chunks) > 1
    assert all(len(chunk) <= 200 for chunk in chunks)
    seen = {word for chunk in chunks for word in chunk.split()}
    assert seen == set(words)


def test_neighbouring_chunks_overlap() -> None:
    text = " ".join(f"w{i}" for i in range(500))
    chunks = Chunker(100, 30).split(text)
    for left, right in itertools.pairwise(chunks):
        assert right.split()[0] in left.split(), (left, right)


def test_paragraph_boundaries_are_preferred() -> None:
    first = "Alpha paragraph. " * 10
    second = "Beta paragraph. " * 10
    chunks = Chunker(200, 0).split(f"{first.strip()}\n\n{second.strip()}")
    assert chunks == [first.strip(), second.strip()]


def test_unbreakable_text_is_cut_by_characters() -> None:
    chunks = Chunker(50, 10).split("x" * 260)
    assert all(len(chunk) <= 50 for chunk in chunks)
    assert "".join(chunks).count("x") >= 260


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (100, 100), (100, -1)])
def test_invalid_settings(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk_"):
        Chunker(size, overlap)
