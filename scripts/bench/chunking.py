"""Chunking speed: the retrieval service's Chunker beside langchain's splitter it replaced.

``python -m scripts.bench.chunking`` (from the repository root, ``PYTHONPATH=.``) splits the
same text (default about 5 MB of real sentences from scripts/bench/texts.py: first as
documents of about 900,000 characters, like an upload in ``make bench-upload``, then as
many small documents of about 2,000 characters) with:

* the reference: langchain's ``RecursiveCharacterTextSplitter`` with the model's token
  count as its length function, as the service used before (it tokenizes every candidate
  piece again, many times over);
* ``Chunker.split`` document by document, and ``Chunker.split_many`` on all of them;
* a bare ``encode`` of each document, one call each (one core): what tokenizing every
  text once costs, without splitting.

It prints MB/s (decimal megabytes of text per second of wall time, one run each after a
warm-up), the ratio to the reference and the chunk counts, and whether the chunks equal the
reference's, and writes them into docs/benchmarks.md between the chunking markers
(``make bench-chunking``; ``--no-write`` prints only).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

from aimesh_retrieval.chunking import Chunker, ChunkingConfig, count_tokens, model_tokenizer
from scripts.bench.doc import write_section
from scripts.bench.texts import bench_texts

MB = 1_000_000
DOCUMENT_CHARS = 900_000  # under the retrieval service's 1,000,000 per document
T = TypeVar("T")


def langchain_reference(config: ChunkingConfig) -> Callable[[str], list[str]]:
    """The splitter the service used before the Chunker rewrite: langchain's recursive
    splitter measuring every piece with :func:`count_tokens` (or ``len``), chunks stripped
    and cut to storable length. Kept only as the reference for tests and this benchmark."""
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=config.chunk_size,
        chunk_overlap=config.chunk_overlap,
        length_function=count_tokens if config.unit == "tokens" else len,
        separators=(
            RecursiveCharacterTextSplitter.get_separators_for_language(Language.MARKDOWN)
            if config.markdown
            else None
        ),
        is_separator_regex=config.markdown,
    )

    def split(text: str) -> list[str]:
        return [chunk for chunk in (c.strip() for c in splitter.split_text(text)) if chunk]

    return split


def make_documents(
    total_chars: int, document_chars: int = DOCUMENT_CHARS, seed: int = 3
) -> list[str]:
    """Documents of about ``document_chars`` characters of shuffled real sentences,
    ``total_chars`` characters or a little more in all."""
    rng = random.Random(seed)
    sentences = bench_texts(1000)
    documents: list[str] = []
    written = 0
    while written < total_chars:
        parts: list[str] = []
        length = 0
        while length < min(document_chars, total_chars - written):
            sentence = rng.choice(sentences)
            parts.append(sentence)
            length += len(sentence) + 1
        documents.append(" ".join(parts))
        written += length
    return documents


def _timed(run: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def _row(name: str, seconds: float, chars: int, chunks: int | None, base: float) -> str:
    count = "" if chunks is None else f"{chunks:,}"
    return f"| {name} | {chars / seconds / MB:.2f} | {base / seconds:.2f}x | {count} |"


def run(documents: Sequence[str], config: ChunkingConfig) -> list[str]:
    """Markdown lines: a heading line and a table of the four ways to split ``documents``."""
    chars = sum(len(document) for document in documents)
    chunker = Chunker.from_config(config)
    reference = langchain_reference(config)
    warm = documents[0][:20_000]
    chunker.split_many([warm])
    reference(warm)
    base, old = _timed(lambda: [reference(document) for document in documents])
    one, new = _timed(lambda: [chunker.split(document) for document in documents])
    many, batched = _timed(lambda: chunker.split_many(documents))
    tokenizer = model_tokenizer()
    tokenize, _ = _timed(
        lambda: [
            len(tokenizer.encode(document, add_special_tokens=False)) for document in documents
        ]
    )
    if new != batched:
        raise SystemExit("split_many disagrees with split")
    same = sum(a == b for a, b in zip(old, new, strict=True))

    def count(split: list[list[str]]) -> int:
        return sum(map(len, split))

    return [
        f"{len(documents):,} documents, {chars / MB:.2f} MB; chunk_size {config.chunk_size}, "
        f"overlap {config.chunk_overlap} {config.unit}; documents chunked exactly as the "
        f"reference: {same} of {len(documents)}.",
        "",
        "| splitter | MB/s | vs langchain | chunks |",
        "|---|---:|---:|---:|",
        _row("langchain (reference, the old splitter)", base, chars, count(old), base),
        _row("Chunker.split, one document at a time", one, chars, count(new), base),
        _row("Chunker.split_many (what the service calls)", many, chars, count(batched), base),
        _row("tokenizing each document once, no splitting", tokenize, chars, None, base),
        "",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=5.0, help="text to split (MB)")
    parser.add_argument("--chunk-size", type=int, default=ChunkingConfig().chunk_size)
    parser.add_argument("--chunk-overlap", type=int, default=ChunkingConfig().chunk_overlap)
    parser.add_argument("--unit", choices=["tokens", "chars"], default="tokens")
    parser.add_argument(
        "--small-chars",
        type=int,
        default=2_000,
        help="size of the documents of the second run (many small documents)",
    )
    parser.add_argument("--no-write", action="store_true", help="Print only")
    args = parser.parse_args(argv)
    config = ChunkingConfig(args.chunk_size, args.chunk_overlap, unit=args.unit)
    if reason := config.validate():
        parser.error(reason)
    total = int(args.megabytes * MB)
    lines = run(make_documents(total), config)
    lines += run(make_documents(total, args.small_chars), config)
    lines.append(
        f"`make bench-chunking` (scripts/bench/chunking.py), 1-minute load average "
        f"{os.getloadavg()[0]:.1f} at the end; one timed run each after a warm-up."
    )
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        write_section("chunking", "Chunking", section)


if __name__ == "__main__":
    main()
