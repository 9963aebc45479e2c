"""Text out of uploaded files: .txt .md .html .pdf .docx .csv .json.

Document structure survives as Markdown heading lines ("## Install"): HTML h1-h6, DOCX
"Title" and "Heading N" paragraphs, and a PDF's outline (bookmarks: the line that reads as
the entry's title becomes the heading, else the heading opens the entry's page). The
retrieval service reads each chunk's section path from them (chunk context).

Every failure is a :class:`FileRejected` with the HTTP status to answer and a reason
that names the file, so one bad file fails the whole upload before anything is stored.
Parsers read from a file object (FastAPI spools uploads to disk beyond 1 MiB), and the
extracted text of one file is bounded by ``max_chars``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any

from aimesh_common import jsonlimits
from aimesh_gateway.archives import ArchiveLimits, ArchiveRejected, LimitedArchive, open_archive

SUPPORTED = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".csv", ".json")
HTML_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def markdown_heading(level: int, words: str) -> str:
    """A Markdown heading line (levels past 6 are 6)."""
    return f"{'#' * min(max(level, 1), 6)} {words}"


class FileRejected(Exception):
    """A file that cannot be ingested: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, filename: str, reason: str) -> None:
        super().__init__(f"file '{filename}': {reason}")
        self.status = status
        self.filename = filename
        self.reason = reason


@dataclass(frozen=True)
class ParsedDocument:
    """One document extracted from a file."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FileRejected(
            422, name, f"is not valid UTF-8 text (byte {error.start} cannot be decoded)"
        ) from None


def _html(data: bytes, name: str) -> tuple[str, str | None]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(data, name), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else None
    # Headings become Markdown heading lines: retrieval reads the section path from them.
    for heading in soup.find_all(HTML_HEADINGS):
        words = " ".join(heading.get_text(" ").split())
        if words:
            heading.string = f"\n{markdown_heading(int(heading.name[1]), words)}\n"
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line), title or None


def _pdf(stream: IO[bytes], name: str) -> tuple[str, str | None]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(stream)
        if reader.is_encrypted:
            raise FileRejected(422, name, "is an encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
        outline = _pdf_outline(reader)
    except FileRejected:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as error:
        raise FileRejected(422, name, f"is not a readable PDF ({type(error).__name__})") from None
    for number, entries in outline.items():
        pages[number] = _with_headings(pages[number], entries)
    return "\n\n".join(page.strip() for page in pages if page.strip()), title


def _pdf_outline(reader: Any) -> dict[int, list[tuple[int, str]]]:
    """The PDF's outline (bookmarks) as (level, title) per page index, in outline order;
    empty when the PDF has none or it cannot be read."""
    from pypdf.errors import PyPdfError

    found: dict[int, list[tuple[int, str]]] = {}

    def walk(items: list[Any], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            words = " ".join(str(getattr(item, "title", "") or "").split())
            try:
                page = reader.get_destination_page_number(item)
            except (PyPdfError, ValueError, KeyError, TypeError, AttributeError):
                continue
            if words and page is not None and 0 <= page < len(reader.pages):
                found.setdefault(page, []).append((level, words))

    try:
        walk(list(reader.outline), 1)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}
    return found


def _with_headings(page: str, entries: list[tuple[int, str]]) -> str:
    """``page`` with each outline entry on it as a Markdown heading: the line that reads
    the same as its title becomes the heading, else it goes before the page's text."""
    lines = page.splitlines()
    before: list[str] = []
    for level, words in entries:
        wanted = words.casefold()
        for index, line in enumerate(lines):
            if " ".join(line.split()).casefold() == wanted:
                lines[index] = markdown_heading(level, words)
                break
        else:
            before.append(markdown_heading(level, words))
    return "\n".join([*before, *lines])


DOCX_LIMITS = ArchiveLimits()
"""What reading one .docx may cost (entries, inflated bytes, compression ratio)."""
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
_DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"
_RUN_TEXT = {_W + "t": None, _W + "tab": "\t", _W + "ptab": "\t", _W + "br": "\n", _W + "cr": "\n"}
_RUN_TEXT[_W + "noBreakHyphen"] = "-"


def _xml_parser() -> Any:
    from lxml import etree  # type: ignore[import-untyped]

    # No entities, no network, libxml2's default bounds on depth and node size.
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def _small_xml(archive: LimitedArchive, part: str) -> Any:
    from lxml import etree

    return etree.fromstring(archive.read(part), _xml_parser())


def _relationships(archive: LimitedArchive, part: str) -> dict[str, str]:
    """Relationship type (its last path segment) to target part, of ``part``'s .rels."""
    folder, _, base = part.rpartition("/")
    rels = f"{folder}/_rels/{base}.rels" if folder else f"_rels/{base}.rels"
    if rels not in archive.names():
        return {}
    found: dict[str, str] = {}
    for rel in _small_xml(archive, rels).iter(_REL):
        if rel.get("TargetMode") == "External":
            continue
        kind = str(rel.get("Type", "")).rsplit("/", 1)[-1]
        target = str(rel.get("Target", ""))
        if target.startswith("/"):
            target = target[1:]
        elif folder:
            target = f"{folder}/{target}"
        found.setdefault(kind, str(PurePosixPath(target)))
    return found


def _docx_styles(archive: LimitedArchive, part: str | None) -> dict[str, str]:
    """Paragraph style id to its name, lower case ("Heading1" to "heading 1")."""
    if part is None or part not in archive.names():
        return {}
    names: dict[str, str] = {}
    for style in _small_xml(archive, part).iter(_W + "style"):
        name = style.find(_W + "name")
        if name is not None:
            names[str(style.get(_W + "styleId", ""))] = str(name.get(_W + "val", "")).lower()
    return names


def _docx_heading(style: str) -> int | None:
    """The heading level of a style name: "title" is 1, "heading N" is N."""
    style = style.lower()
    if style == "title":
        return 1
    if style.startswith("heading") and style[7:].strip().isdigit():
        return int(style[7:].strip())
    return None


def _paragraph_text(paragraph: Any) -> str:
    pieces: list[str] = []
    for node in paragraph.iter(*_RUN_TEXT):
        fixed = _RUN_TEXT[node.tag]
        pieces.append((node.text or "") if fixed is None else fixed)
    return "".join(pieces)


def _docx_block(element: Any, styles: dict[str, str]) -> list[str]:
    """The text of one body-level element: a paragraph (a heading as a Markdown heading),
    a table (a row per line, cells joined by " | ") or a content control's paragraphs."""
    if element.tag == _W + "p":
        text = _paragraph_text(element)
        if not text.strip():
            return []
        style = element.find(f"{_W}pPr/{_W}pStyle")
        style_id = str(style.get(_W + "val", "")) if style is not None else ""
        level = _docx_heading(styles.get(style_id, style_id.replace("Heading", "heading ")))
        return [markdown_heading(level, " ".join(text.split())) if level else text]
    if element.tag == _W + "tbl":
        rows = []
        for row in element.iter(_W + "tr"):
            cells = [
                "\n".join(_paragraph_text(p) for p in cell.iterchildren(_W + "p")).strip()
                for cell in row.iterchildren(_W + "tc")
            ]
            if any(cells):
                rows.append(" | ".join(cells))
        return rows
    if element.tag == _W + "sdt":
        return [b for p in element.iter(_W + "p") for b in _docx_block(p, styles)]
    return []


def _docx(stream: IO[bytes], name: str) -> tuple[str, str | None]:
    """A .docx's body text in document order, streamed: inflated under :data:`DOCX_LIMITS`
    and parsed one body-level element at a time, so memory stays bounded by the largest
    paragraph or table, whatever the document's size."""
    from lxml import etree

    blocks: list[str] = []
    try:
        with open_archive(stream, DOCX_LIMITS) as archive:
            _small_xml(archive, "[Content_Types].xml")  # a package must declare its types
            package = _relationships(archive, "")
            main = package.get("officeDocument")
            if main is None:
                raise FileRejected(422, name, "is not a readable .docx document (no main part)")
            core = package.get("core-properties")
            title_node = (
                _small_xml(archive, core).find(_DC_TITLE)
                if core and core in archive.names()
                else None
            )
            styles = _docx_styles(archive, _relationships(archive, main).get("styles"))
            body = _W + "body"
            with archive.open(main) as document:
                events = etree.iterparse(
                    document,
                    events=("end",),
                    resolve_entities=False,
                    no_network=True,
                    huge_tree=False,
                )
                seen_body = False
                for _, element in events:
                    parent = element.getparent()
                    if parent is None or parent.tag != body:
                        seen_body = seen_body or element.tag == body
                        continue
                    blocks.extend(_docx_block(element, styles))
                    element.clear()
                    while element.getprevious() is not None:
                        del parent[0]
                if not seen_body:
                    raise FileRejected(422, name, "is not a readable .docx document (no body)")
    except ArchiveRejected as rejected:
        raise FileRejected(rejected.status, name, rejected.reason) from None
    except (etree.LxmlError, ValueError, KeyError, OSError) as error:
        raise FileRejected(
            422, name, f"is not a readable .docx document ({type(error).__name__})"
        ) from None
    title = " ".join(str(title_node.text or "").split()) if title_node is not None else ""
    return "\n\n".join(blocks), title or None


def _csv(data: bytes, name: str) -> str:
    text = _decode(data, name)
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise FileRejected(422, name, f"is not valid CSV ({error})") from None
    if not rows:
        return ""
    header, body = rows[0], rows[1:]
    if not body:
        return ", ".join(header)
    lines = []
    for row in body:
        pairs = [f"{key}: {value}" for key, value in zip(header, row, strict=False) if value]
        lines.append("; ".join(pairs))
    return "\n".join(line for line in lines if line)


def _json(data: bytes, name: str, stem: str) -> list[ParsedDocument]:
    try:
        value = jsonlimits.loads(_decode(data, name), "file", max_depth=jsonlimits.MAX_BODY_DEPTH)
    except json.JSONDecodeError as error:
        raise FileRejected(
            422, name, f"is not valid JSON (line {error.lineno}, column {error.colno})"
        ) from None
    except jsonlimits.JsonLimitError as error:
        raise FileRejected(422, name, f"is refused: {error}") from None
    # A list of {"id"?, "text", "metadata"?} objects is a batch of text documents.
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, dict) and isinstance(v.get("text"), str) for v in value)
    ):
        documents = []
        for index, item in enumerate(value):
            meta = item.get("metadata") or {}
            if not isinstance(meta, dict):
                raise FileRejected(422, name, f"item {index}: metadata must be an object")
            try:
                jsonlimits.check_json(
                    meta,
                    f"item {index}: metadata",
                    max_depth=jsonlimits.MAX_STRUCT_DEPTH,
                    max_int=jsonlimits.MAX_EXACT_INT,
                )
            except jsonlimits.JsonLimitError as error:
                raise FileRejected(422, name, str(error)) from None
            doc_id = str(item.get("id") or f"{stem}#{index}")
            documents.append(ParsedDocument(doc_id, item["text"], meta))
        return documents
    return [ParsedDocument(stem, json.dumps(value, ensure_ascii=False, indent=1), {})]


def clean_name(filename: str) -> str:
    """The upload's name as a document id: a relative path (the CLI sends one, so files of
    the same name in different folders stay apart) without empty, ``.`` or ``..`` parts."""
    parts = [p for p in filename.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    name = "/".join(parts)[-200:].lstrip("/")
    return name or "upload"


def parse_file(
    stream: IO[bytes], filename: str, size: int, *, max_bytes: int, max_chars: int
) -> list[ParsedDocument]:
    """The documents in one uploaded file (several only for a JSON list of documents)."""
    name = clean_name(filename)
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in SUPPORTED:
        raise FileRejected(
            415,
            name,
            f"has the unsupported type '{suffix or '(none)'}'; supported: {', '.join(SUPPORTED)}",
        )
    if size > max_bytes:
        raise FileRejected(413, name, f"is {size} bytes; at most {max_bytes} are allowed")
    if size == 0:
        raise FileRejected(422, name, "is empty")
    meta: dict[str, Any] = {"source": name, "type": suffix.lstrip(".")}
    title: str | None = None
    if suffix == ".pdf":
        text, title = _pdf(stream, name)
    elif suffix == ".docx":
        text, title = _docx(stream, name)
    else:
        data = stream.read(max_bytes + 1)
        if suffix in (".html", ".htm"):
            text, title = _html(data, name)
        elif suffix == ".csv":
            text = _csv(data, name)
        elif suffix == ".json":
            documents = _json(data, name, name)
            for document in documents:
                if not document.text.strip():
                    raise FileRejected(422, name, f"document '{document.id}' has no text")
                if len(document.text) > max_chars:
                    raise FileRejected(413, name, f"has more than {max_chars} characters of text")
            return [ParsedDocument(d.id, d.text, {**d.metadata, **meta}) for d in documents]
        else:
            text = _decode(data, name)
    if not text.strip():
        raise FileRejected(422, name, "contains no text")
    try:  # a PDF's broken UTF-16 text can hold lone surrogates, which no service can carry
        jsonlimits.check_json([text, title or ""], "text", max_depth=2)
    except jsonlimits.JsonLimitError as error:
        raise FileRejected(422, name, str(error)) from None
    meta["title"] = title or PurePosixPath(name).stem
    parts = split_text(text, max_chars)
    if len(parts) == 1:
        return [ParsedDocument(name, text, meta)]
    # A long file becomes several documents, "<name>#part<N>", each within the limit.
    return [
        ParsedDocument(f"{name}#part{index + 1}", part, {**meta, "part": index + 1})
        for index, part in enumerate(parts)
    ]


def split_text(text: str, max_chars: int) -> list[str]:
    """``text`` in pieces of at most ``max_chars``, cut at paragraph, line or word ends."""
    parts: list[str] = []
    start = 0
    while len(text) - start > max_chars:
        window = text[start : start + max_chars]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(" "))
        end = start + (cut + 1 if cut > max_chars // 2 else max_chars)
        if text[start:end].strip():
            parts.append(text[start:end])
        start = end
    if text[start:].strip():
        parts.append(text[start:])
    return parts
