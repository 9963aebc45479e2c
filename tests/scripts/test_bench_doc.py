"""The benchmarks' shared writer of their docs/benchmarks.md sections."""

from __future__ import annotations

from pathlib import Path

from scripts.bench.doc import write_section


def test_a_section_is_appended_once_then_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    write_section("gateway", "Gateway", "first", doc)
    write_section("retrieval", "Retrieval", "r1", doc)
    write_section("gateway", "Gateway", "second\n| a | b |", doc)
    text = doc.read_text()
    assert text.count("## Gateway") == 1
    assert "first" not in text
    assert "<!-- gateway:start -->\nsecond\n| a | b |\n<!-- gateway:end -->" in text
    # The other section and the order stay.
    assert text.index("## Gateway") < text.index("## Retrieval")
    assert "<!-- retrieval:start -->\nr1\n<!-- retrieval:end -->" in text
