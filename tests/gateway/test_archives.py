"""ZIP-based uploads under limits (issue 21 item 1): a .docx bomb, many entries, a nested
archive, lying headers; and the streaming .docx reader keeps headings, tables in document
order and the core title."""

from __future__ import annotations

import io
import time
import zipfile

import docx
import pytest

from aimesh_gateway.archives import ArchiveLimits, ArchiveRejected, open_archive
from aimesh_gateway.parsing import FileRejected, parse_file

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
CONTENT_TYPES = (
    b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
    b'content-types"><Default Extension="xml" ContentType="application/xml"/></Types>'
)
RELS = (
    b'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
    b'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
    b'officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>'
    b"</Relationships>"
)
PARAGRAPH = b"<w:p><w:r><w:t>All work and no play makes a dull docx.</w:t></w:r></w:p>"


def document_xml(paragraphs: int) -> bytes:
    return (
        f'<?xml version="1.0"?><w:document xmlns:w="{W_NS}"><w:body>'.encode()
        + PARAGRAPH * paragraphs
        + b"</w:body></w:document>"
    )


def package(document: bytes, extra: dict[str, bytes] | None = None, entries: int = 0) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", RELS)
        archive.writestr("word/document.xml", document)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
        for index in range(entries):
            archive.writestr(f"word/media/e{index}.bin", b"")
    return out.getvalue()


def bomb_bytes() -> bytes:
    """About 100 KB whose word/document.xml inflates to about 30 MB (issue 21's bomb)."""
    return package(document_xml(30_000_000 // len(PARAGRAPH)))


def parse(name: str, data: bytes) -> tuple[str, dict[str, object]]:
    documents = parse_file(
        io.BytesIO(data), name, len(data), max_bytes=50_000_000, max_chars=1_000_000
    )
    return "\n\n".join(d.text for d in documents), documents[0].metadata


def rejected(data: bytes) -> FileRejected:
    started = time.monotonic()
    with pytest.raises(FileRejected) as caught:
        parse("bomb.docx", data)
    # A hang guard, generous for a shared machine: the bomb is refused while inflating.
    assert time.monotonic() - started < 2.0
    return caught.value


def test_a_docx_bomb_is_refused_while_inflating() -> None:
    data = bomb_bytes()
    assert len(data) < 150_000  # about 300 times smaller than it inflates
    error = rejected(data)
    assert error.status == 422
    assert "decompression bomb" in error.reason
    assert "word/document.xml" in error.reason


def test_too_many_entries_are_refused_before_the_directory_is_read() -> None:
    error = rejected(package(document_xml(1), entries=10_001))
    assert error.status == 413
    assert "more than 10000 entries" in error.reason


def test_too_much_inflated_text_is_413_even_at_an_ordinary_ratio() -> None:
    limits = ArchiveLimits(max_inflated_bytes=1_000_000, max_ratio=1_000_000)
    data = package(document_xml(40_000))
    with (
        open_archive(io.BytesIO(data), limits) as archive,
        pytest.raises(ArchiveRejected) as caught,
    ):
        archive.read("word/document.xml")
    assert caught.value.status == 413


def test_a_nested_archive_is_never_inflated() -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("bomb.xml", b"0" * 20_000_000)
    data = package(document_xml(3), extra={"word/embeddings/nested.zip": inner.getvalue()})
    text, _ = parse("nested.docx", data)
    assert text.count("All work and no play") == 3


def test_a_header_that_lies_about_sizes_is_unreadable() -> None:
    data = bytearray(package(document_xml(5_000)))
    # The central directory says word/document.xml inflates to 10 bytes.
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("word/document.xml")
    directory = data.rfind(b"PK\x01\x02", 0, data.rfind(b"word/document.xml"))
    data[directory + 24 : directory + 28] = (10).to_bytes(4, "little")
    assert info.file_size > 10
    error = rejected(bytes(data))
    assert error.status == 422
    assert "unreadable part 'word/document.xml' (longer than declared)" in error.reason


def test_the_docx_reader_keeps_headings_tables_in_order_and_the_title() -> None:
    document = docx.Document()
    document.core_properties.title = "Harbor  memo"
    document.add_heading("Harbor", level=1)
    document.add_paragraph("Mooring fees:")
    table = document.add_table(rows=2, cols=2)
    for row, (boat, fee) in enumerate([("Boat", "Fee"), ("Dinghy", "5 EUR")]):
        table.cell(row, 0).text = boat
        table.cell(row, 1).text = fee
    document.add_heading("Winter", level=2)
    paragraph = document.add_paragraph("The basin closes")
    paragraph.add_run().add_tab()
    paragraph.add_run("in December.")
    out = io.BytesIO()
    document.save(out)
    text, meta = parse("memo.docx", out.getvalue())
    assert text.split("\n\n") == [
        "# Harbor",
        "Mooring fees:",
        "Boat | Fee",
        "Dinghy | 5 EUR",
        "## Winter",
        "The basin closes\tin December.",
    ]
    assert meta["title"] == "Harbor memo"
