"""The 50 MB upload benchmark's building blocks (the benchmark itself is ``make bench-upload``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from scripts.bench.proc import status_kib, tree
from scripts.bench.upload import DOCUMENT_CHARS, make_upload


def test_the_upload_is_big_enough_and_every_document_fits_the_service(tmp_path: Path) -> None:
    path = tmp_path / "documents.json"
    size, count = make_upload(path, 3 * 1024 * 1024)
    assert size == path.stat().st_size >= 3 * 1024 * 1024
    documents = json.loads(path.read_text())
    assert len(documents) == count >= 3
    assert len({d["id"] for d in documents}) == count
    # Under the retrieval service's 1,000,000 characters per document, and real text.
    assert all(DOCUMENT_CHARS <= len(d["text"]) < 1_000_000 for d in documents)
    assert len(set(documents[0]["text"].split(". "))) > 100


def test_memory_is_read_from_the_kernel() -> None:
    assert tree(os.getpid())[0] == os.getpid()
    rss, peak = status_kib(os.getpid(), "VmRSS"), status_kib(os.getpid(), "VmHWM")
    assert 0 < rss <= peak
