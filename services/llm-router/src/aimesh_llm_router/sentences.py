"""Sentence splitting for the extractive (local) provider, aware of document structure.

Deliberately simple and dependency-free. Text is read line by line into blocks:

- headings are dropped: Markdown ``#`` lines, lines underlined with ``===``/``---``, man
  page section names in capitals, and short unpunctuated title lines that stand alone or
  introduce a list of terms; so are horizontal rules and table separator rows;
- list items (``-``, ``*``, ``+``, ``•``, ``1.``, ``1)``) start a new block, without
  their marker;
- definitions keep their term: a flag or term line followed by a more indented
  description (man pages, reStructuredText, NumPy docstrings), an option with its help
  text after a wide gap (argparse), a list item or line of the form ``term: description``
  (also ``` `term` - description```), and table rows (first cell the term, the other
  cells its description);
- other lines are wrapped paragraph text.

Blocks are then split on sentence-final punctuation followed by a capital letter, digit
or quote, unless the word before is a common abbreviation. Every sentence of a
definition is given with its term ("-r, --recursive: Read all files under each
directory, recursively."), so a quote always says what it is about. Inline Markdown
(backticks, bold marks, links) is reduced to its text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "inc",
        "ltd",
        "co",
        "no",
        "fig",
        "approx",
        "cf",
        "al",
        "u.s",
    }
)
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_BULLET = re.compile(r"^(?:[-*+\u2022\u25aa\u2023\u2043]|\d{1,3}[.)]|[a-z][.)])\s+")
_BARE_MARKER = re.compile(r"^(?:[-*+\u2022\u25aa\u2023\u2043]|\d{1,3}[.)])$")
_SPACES = re.compile(r"\s+")
_QUOTE_MARK = re.compile(r"^(?!>>>)>+(?:\s+|$)")  # a block quote's "> ", no doctest
_MD_HEADING = re.compile(r"^#{1,6}(?:\s|$)")
_RULE = re.compile(r"^(?:[-=*_~^`#+]\s*){3,}$")
_TABLE_SEPARATOR = re.compile(r"^\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?$")
# "-r, --recursive", "--color[=WHEN], --colour[=WHEN]", "-f FILE, --file=FILE", "-?"
_FLAG_LINE = re.compile(r"^[-+]{1,2}[A-Za-z0-9?#@][^\s,=\[]*")
# argparse help: "  -h, --help            show this help message and exit"
_FLAG_WITH_HELP = re.compile(r"^([-+]{1,2}[A-Za-z0-9?][^ ]*(?:,? [-+<A-Z\[][^ ]*)*) {2,}(\S.*)$")
# "`name`: text", "**name** - text", "name (type): text", "name: text"
_INLINE_TERM = re.compile(
    r"^((?:`[^`]+`|\*\*[^*]+\*\*)(?:\s*(?:,|/|or)\s*(?:`[^`]+`|\*\*[^*]+\*\*))*)"
    r"\s*(?:[:\u2014\u2013]|\s-)\s*(\S.*)$"
)
_COLON_TERM = re.compile(r"^([^:.!?]{1,60}?):\s+(\S.*)$")
# An option with its description on one line: "-I, --info part...: Print ...",
# "-P profile[,...]: Check ...": the term may hold dots (an ellipsis, a bracketed list),
# but no sentence end.
_FLAG_TERM = re.compile(r"^([-+]{1,2}[A-Za-z0-9?#@](?:[^:.]|\.(?=\S)){0,60}?):\s+(\S.*)$")
# An API signature line: "Queue.put(item)", "dumps(obj, *, indent=None) -> str".
_SIGNATURE = re.compile(r"^[A-Za-z_][\w.]*\((?:[^()]|\([^()]*\))*\)(?:\s*->\s*[^.]+)?$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"\*\*|__|`")
_TERMINAL = re.compile(r"[.!?:;,]$")


@dataclass(frozen=True)
class Sentence:
    """A quotable sentence; ``term`` is what it defines when it belongs to a definition."""

    text: str
    term: str = ""
    # The first sentence of its definition (or of its paragraph).
    lead: bool = True


def clean_inline(text: str) -> str:
    """Markdown inline markup reduced to text: links to their label, no backticks or bold."""
    text = _LINK.sub(r"\1", text)
    return _SPACES.sub(" ", _EMPHASIS.sub("", text)).strip()


def _pieces(paragraph: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(paragraph):
        candidate = paragraph[start : match.start()]
        last_word = candidate.rsplit(maxsplit=1)[-1] if candidate.split() else ""
        stem = last_word.rstrip(".!?\"')]").lower()
        if stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha()):
            continue
        sentences.append(paragraph[start : match.end()])
        start = match.end()
    sentences.append(paragraph[start:])
    return [_SPACES.sub(" ", sentence).strip() for sentence in sentences]


@dataclass
class _Block:
    term: str
    lines: list[str]
    indent: int  # indentation of the term (definitions) or first line
    # Definitions whose description is indented under the term go on, blank lines
    # included, while lines are indented at least this deep; None: ends at a blank line.
    desc_indent: int | None = None
    # A later paragraph of the same definition: its first sentence is not the lead.
    continued: bool = False
    # The description began on the term's line ("-H     equivalent to ..."): after a blank
    # line, a flag no deeper than that column starts the next entry, even when the
    # chunker took the term line's indentation and so the column is shallow.
    help_on_term_line: bool = False


@dataclass(frozen=True)
class _Line:
    raw: str
    text: str  # stripped
    indent: int

    @property
    def blank(self) -> bool:
        return not self.text


def _lines(text: str) -> list[_Line]:
    result = []
    for raw in text.expandtabs(8).splitlines():
        stripped = _QUOTE_MARK.sub("", raw.strip())
        result.append(_Line(raw, stripped, len(raw) - len(raw.lstrip()) if stripped else 0))
    return result


def _is_table_row(text: str) -> bool:
    return text.startswith("|") and text.count("|") >= 2


def _cells(text: str) -> list[str]:
    inner = text.strip().strip("|")
    return [clean_inline(cell) for cell in re.split(r"(?<!\\)\|", inner) if cell.strip()]


def _short_title(text: str) -> bool:
    """A line that reads like a title: a few words, no sentence punctuation at the end."""
    return len(text.split()) <= 6 and not _TERMINAL.search(text) and not _FLAG_LINE.match(text)


def _capitals(text: str) -> bool:
    """``DESCRIPTION``, ``SEE ALSO``, ``EXIT STATUS``: a man page section name."""
    letters = [c for c in text if c.isalpha()]
    return (
        len(letters) >= 3
        and all(c.isupper() for c in letters)
        and all(c.isalpha() or c in " -&/" for c in text)
    )


def _page_title(text: str) -> bool:
    """A man page header or footer: ``GREP(1)   User Commands   GREP(1)``."""
    return bool(re.search(r"\S+\(\d\w*\)\s*$", text)) and "   " in text


def _blocks(text: str) -> list[_Block]:
    lines = _lines(text)
    blocks: list[_Block] = []
    current: _Block | None = None
    header_cells: list[str] = []
    signature = ""  # the API signature the paragraphs being read document
    signature_used = False
    in_doctest = False
    in_table = False  # rows of a pipe table, which need no outer pipes

    def close() -> None:
        nonlocal current
        if current is not None and (current.lines or current.term):
            blocks.append(current)
        current = None

    def next_nonblank(index: int) -> _Line | None:
        for line in lines[index + 1 :]:
            if not line.blank:
                return line
        return None

    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else None
        previous_blank = index == 0 or lines[index - 1].blank
        text_ = line.text
        if line.blank:
            in_doctest = False
            in_table = False
            # A blank line ends a paragraph; a definition goes on while its description
            # stays indented deeper than its term.
            if current is not None and current.desc_indent is None:
                close()
            continue
        if (
            current is not None
            and current.desc_indent is not None
            and (
                line.indent < current.desc_indent
                or (
                    current.help_on_term_line
                    and previous_blank
                    and line.indent <= current.desc_indent
                    and _FLAG_LINE.match(text_) is not None
                )
            )
        ):
            close()
        # Headings, rules, table separators: never quoted.
        if text_.startswith(">>>") or (in_doctest and not line.blank):
            close()  # a doctest example and its output, up to a blank line: code
            in_doctest = True
            continue
        if _MD_HEADING.match(text_) or _RULE.match(text_) or _page_title(text_):
            close()
            signature = ""
            continue
        if (
            following is not None
            and _RULE.match(following.text)
            and following.text[0] in "=-~^*"
            and len(text_.split()) <= 12
        ):
            close()  # a heading underlined by the next line
            continue
        if _TABLE_SEPARATOR.match(text_) and "-" in text_:
            in_table = in_table or "|" in text_
            continue
        if _is_table_row(text_) or (
            "|" in text_
            and (
                in_table
                or (
                    following is not None
                    and "|" in following.text
                    and _TABLE_SEPARATOR.match(following.text)
                )
            )
        ):
            close()
            in_table = True
            cells = _cells(text_)
            if following is not None and _TABLE_SEPARATOR.match(following.text):
                header_cells = cells  # the header row names the columns: not content
                continue
            if len(cells) >= 2:
                # "| `-r` | off | Recurse. |" under "| Flag | Default | Meaning |" ->
                # "-r: Default: off; Meaning: Recurse."
                labels = header_cells[1:] if len(header_cells) == len(cells) else []
                described = [
                    f"{label}: {cell}" if label else cell
                    for label, cell in zip(
                        labels or [""] * (len(cells) - 1), cells[1:], strict=True
                    )
                ]
                blocks.append(_Block(cells[0], ["; ".join(described)], line.indent))
            elif cells:
                blocks.append(_Block("", cells, line.indent))
            continue
        header_cells, in_table = [], False
        nxt = next_nonblank(index)
        starts_item = bool(_BULLET.match(text_))
        body = _BULLET.sub("", text_) if starts_item else text_
        if _BARE_MARKER.match(body) or not any(c.isalnum() for c in body):
            continue
        # Term followed by a deeper-indented description (man, rst, numpy docstrings).
        describes = (
            following is not None
            and not following.blank
            and following.indent > line.indent
            and not starts_item
        )
        in_description = current is not None and current.desc_indent is not None
        if not in_description and not starts_item:
            if _capitals(text_) and previous_blank:
                close()
                continue
            if (
                previous_blank
                and _short_title(text_)
                and nxt is not None  # a title introduces something
                and (following is None or following.blank or _FLAG_LINE.match(nxt.text))
            ):
                close()
                continue
        if in_description and current is not None:
            current.lines.append(body)
            continue
        flag = _FLAG_LINE.match(body)
        if flag and describes and following is not None and len(body.split()) <= 8:
            close()
            current = _Block(clean_inline(body), [], line.indent, following.indent)
            continue
        if (
            flag
            and previous_blank
            and (following is None or following.blank)
            and len(body.split()) <= 4
            and not _TERMINAL.search(body)
        ):
            close()  # an option whose description is not in this text
            continue
        with_help = _FLAG_WITH_HELP.match(body) if flag else None
        if with_help:
            close()
            term, help_text = with_help.group(1), with_help.group(2)
            column = line.indent + (len(text_) - len(body)) + with_help.start(2)
            current = _Block(
                clean_inline(term), [help_text], line.indent, column, help_on_term_line=True
            )
            continue
        if describes and following is not None and _short_title(body):
            close()
            current = _Block(clean_inline(body), [], line.indent, following.indent)
            continue
        if starts_item or current is None or previous_blank:
            close()
            inline = _INLINE_TERM.match(body) or (
                (_COLON_TERM.match(body) or (_FLAG_TERM.match(body) if flag else None))
                if (starts_item or previous_blank) and not signature
                else None
            )
            if _SIGNATURE.match(body) and nxt is not None:
                # "Queue.put_nowait(item)" or "HelpFormatter(prog, width=None)" heading its
                # docstring: the term of every paragraph up to the next signature.
                signature, signature_used = clean_inline(body), False
                continue
            if inline and len(inline.group(1).split()) <= 5:
                signature = ""
                current = _Block(clean_inline(inline.group(1)), [inline.group(2)], line.indent)
            elif signature:
                current = _Block(signature, [body], line.indent, continued=signature_used)
                signature_used = True
            else:
                current = _Block("", [body], line.indent)
            continue
        current.lines.append(body)
    close()
    return blocks


def _join_lines(lines: list[str]) -> str:
    """Wrapped lines as one text; a word hyphenated across lines by a typesetter
    ("oper\u2010" + "ation", as man renders it) is mended."""
    text = ""
    for line in lines:
        if text.endswith("\u2010") and line[:1].islower():
            text = text[:-1] + line
        else:
            text = f"{text} {line}" if text else line
    return text


def _join_term(term: str, sentence: str) -> str:
    term = term.rstrip()
    return f"{term} {sentence}" if term.endswith(":") else f"{term}: {sentence}"


def split_units(text: str) -> list[Sentence]:
    """The quotable sentences of ``text`` in order, each definition sentence with its term."""
    result: list[Sentence] = []
    for block in _blocks(text):
        body = clean_inline(_join_lines(block.lines))
        pieces = [p for p in _pieces(body) if any(c.isalnum() for c in p)] if body else []
        if block.term and not pieces:
            continue  # a term whose description is not in this text says nothing
        for position, piece in enumerate(pieces):
            cleaned = _BULLET.sub("", piece)
            if not any(c.isalnum() for c in cleaned):
                continue
            lead = position == 0 and not block.continued
            if block.term:
                result.append(Sentence(_join_term(block.term, cleaned), block.term, lead))
            else:
                result.append(Sentence(cleaned, "", lead))
    return result


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` in order, whitespace normalized, headings and markers
    dropped, definitions with their terms (see the module docstring)."""
    return [sentence.text for sentence in split_units(text)]
