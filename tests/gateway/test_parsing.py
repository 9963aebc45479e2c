"""Uploaded files keep their headings as Markdown heading lines (chunk context reads them):
HTML h1-h6, DOCX Title/Heading paragraphs, a PDF's outline."""

from __future__ import annotations

import io

import docx
from pypdf import PdfReader, PdfWriter

from aimesh_gateway.parsing import parse_file
from tests.gateway.api.routes.test_jobs import pdf_bytes


def parse(name: str, data: bytes) -> tuple[str, dict[str, object]]:
    [document] = parse_file(
        io.BytesIO(data), name, len(data), max_bytes=10_000_000, max_chars=1_000_000
    )
    return document.text, document.metadata


def test_html_headings_become_markdown_headings() -> None:
    text, meta = parse(
        "guide.html",
        b"<html><head><title>Harbor</title></head><body><h1>Harbor guide</h1>"
        b"<p>Welcome.</p><h2>Mooring <em>rules</em></h2><p>Tie up at the quay.</p>"
        b"<h3>Winter</h3><p>The basin closes.</p><h2>  </h2><p>After.</p></body></html>",
    )
    assert text.splitlines() == [
        "Harbor",  # the <title>
        "# Harbor guide",
        "Welcome.",
        "## Mooring rules",
        "Tie up at the quay.",
        "### Winter",
        "The basin closes.",
        "After.",
    ]
    assert meta["title"] == "Harbor"
    assert meta["type"] == "html"


def test_docx_title_and_heading_paragraphs_become_markdown_headings() -> None:
    document = docx.Document()
    document.add_heading("Memo", level=0)  # the "Title" style
    document.add_heading("Budget", level=1)
    document.add_paragraph("We spend less on rope.")
    document.add_heading("Details  of it", level=2)
    document.add_paragraph("Hemp is cheaper than nylon.")
    out = io.BytesIO()
    document.save(out)
    text, meta = parse("memo.docx", out.getvalue())
    assert text.split("\n\n") == [
        "# Memo",
        "# Budget",
        "We spend less on rope.",
        "## Details of it",
        "Hemp is cheaper than nylon.",
    ]
    assert meta["type"] == "docx"


def pdf_with_outline() -> bytes:
    writer = PdfWriter()
    for words in ("Introduction to knots", "Bowline", "Sheet bend"):
        writer.add_page(PdfReader(io.BytesIO(pdf_bytes(words))).pages[0])
    chapter = writer.add_outline_item(title="Introduction to knots", page_number=0)
    writer.add_outline_item(title="Loops", page_number=1, parent=chapter)
    writer.add_outline_item(title="Sheet bend", page_number=2, parent=chapter)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_pdf_outline_entries_become_markdown_headings() -> None:
    text, _ = parse("knots.pdf", pdf_with_outline())
    # A line reading as the entry becomes the heading; else the heading opens its page.
    assert text.split("\n\n") == [
        "# Introduction to knots",
        "## Loops\nBowline",
        "## Sheet bend",
    ]


def test_pdf_without_outline_is_plain_text() -> None:
    text, _ = parse("plain.pdf", pdf_bytes("Just one line"))
    assert text == "Just one line"
