"""Splitting documents into overlapping chunks for embedding.

Sizes are counted in tokens of the embedding model's own tokenizer (all-MiniLM-L6-v2's
WordPiece, shipped as ``data/all-MiniLM-L6-v2.tokenizer.json`` and read with the
``tokenizers`` library, so the service never imports torch). The model sees at most 256
tokens including ``[CLS]`` and ``[SEP]``; the defaults (200 tokens, 32 overlap) leave
room so that no chunk is silently truncated by the embedding service.

The algorithm is langchain's recursive character splitting (paragraphs, lines, words, then
smaller pieces; pieces merged greedily up to the size, neighbours sharing up to the
overlap), done over character spans of the text instead of copies of it. A text is
tokenized once, with offsets; the size of any span is then read from the token offsets by
bisection instead of tokenizing the span again, which made langchain's splitter with a
token length function 3 to 4 times slower than tokenizing the text. Cuts fall at
whitespace or between tokens, where the tokens of a span alone equal those it covers in the
whole text; the few chunks cut inside a word are tokenized again alone and split further
if that makes them too long, so every chunk keeps to the size on its own (but for a single
character that alone takes more tokens than a tiny size: a Hangul syllable takes three).
On typical prose the chunks are exactly langchain's (tests/retrieval/test_chunking.py
compares them; ``python -m scripts.bench.chunking`` measures the speed).
"""

from __future__ import annotations

import functools
import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal, Protocol

from tokenizers import Encoding, Tokenizer

DEFAULT_CHUNK_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 32
# The model's window minus [CLS] and [SEP].
MAX_CHUNK_TOKENS = 254
# A chunk is stored in a VARCHAR(65535); 16,000 characters stay below it even when every
# character takes four bytes. One WordPiece token can stand for a long unknown "word".
MAX_CHUNK_CHARS = 16_000

# Boundaries in order of preference; a piece starts with the separator that cut it. After
# the last, a text is cut between tokens (or characters for the "chars" unit).
PLAIN_SEPARATORS = ("\n\n", "\n", " ")
# Regular expressions: langchain_text_splitters' Language.MARKDOWN list without its final ""
# (characters): headings, the end of code fences and horizontal rules before paragraphs,
# lines, words.
MARKDOWN_SEPARATORS = (
    "\n#{1,6} ",
    "```\n",
    "\n\\*\\*\\*+\n",
    "\n---+\n",
    "\n___+\n",
    "\n\n",
    "\n",
    " ",
)
# Texts are tokenized in parts of about this many characters, cut at a space or newline,
# and about _GROUP_CHARS characters per encode_batch call (see _token_measures).
_PART_CHARS = 25_000
_PART_CUT = re.compile("[ \n]")
_GROUP_CHARS = 200_000
# Texts split together by split_many: bounds the token offsets held at once (12 bytes a
# token, about 3 bytes a character).
_BATCH_CHARS = 1_000_000

Unit = Literal["tokens", "chars"]


@functools.cache
def model_tokenizer() -> Tokenizer:
    """all-MiniLM-L6-v2's tokenizer, without the padding and truncation its file enables."""
    path = resources.files("aimesh_retrieval") / "data" / "all-MiniLM-L6-v2.tokenizer.json"
    tokenizer = Tokenizer.from_str(path.read_text(encoding="utf-8"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


@functools.cache
def _continuation_ids() -> frozenset[int]:
    """Ids of the WordPiece tokens that continue a word ("##..."): a cut before one is
    inside a word, whose rest may tokenize differently on its own."""
    return frozenset(i for token, i in model_tokenizer().get_vocab().items() if token[:2] == "##")


def count_tokens(text: str) -> int:
    """Tokens of ``text`` for the embedding model, special tokens excluded."""
    return len(model_tokenizer().encode(text, add_special_tokens=False).ids)


@dataclass(frozen=True)
class ChunkingConfig:
    """How a collection splits its documents (stored with the collection)."""

    chunk_size: int = DEFAULT_CHUNK_TOKENS
    chunk_overlap: int = DEFAULT_OVERLAP_TOKENS
    markdown: bool = False
    unit: Unit = "tokens"
    # Whether each chunk carries its document's title and section path (see
    # ``ChunkContext``). Collections created before it existed have no context.
    context: bool = False

    @property
    def context_tokens(self) -> int:
        """Tokens of context a chunk may carry into its embedding: what the model's window
        leaves beside a full chunk, at most ``CONTEXT_TOKENS`` (0: none)."""
        if not self.context:
            return 0
        if self.unit == "chars":
            return CONTEXT_TOKENS
        return max(0, min(CONTEXT_TOKENS, MAX_CHUNK_TOKENS - self.chunk_size))

    def validate(self) -> str | None:
        """A readable reason why the settings are unusable, or None."""
        limit = MAX_CHUNK_TOKENS if self.unit == "tokens" else MAX_CHUNK_CHARS
        if not 1 <= self.chunk_size <= limit:
            return f"chunk_size must be between 1 and {limit} {self.unit} (got {self.chunk_size})"
        if not 0 <= self.chunk_overlap < self.chunk_size:
            return (
                f"chunk_overlap must be at least 0 and smaller than chunk_size "
                f"(got {self.chunk_overlap} with chunk_size {self.chunk_size})"
            )
        return None


class _Measure(Protocol):
    """Sizes of spans of one text, in the chunker's unit."""

    def ranks(self, bounds: Sequence[int]) -> list[int]:
        """Units before each of ``bounds``: a piece between two bounds has the difference.
        Exact for bounds that cut no token (whitespace, punctuation)."""

    def atoms(self, start: int, end: int) -> tuple[list[int], list[int]]:
        """Bounds of the smallest pieces of ``[start, end)`` (the last resort cuts) and
        their ranks, as :meth:`ranks`."""

    def clean_cut(self, text: str, position: int) -> bool:
        """Whether a chunk edge at ``position`` leaves the chunk's size as measured."""


class _CharMeasure:
    """Characters: a span's size is its length."""

    def ranks(self, bounds: Sequence[int]) -> list[int]:
        return list(bounds)

    def atoms(self, start: int, end: int) -> tuple[list[int], list[int]]:
        bounds = list(range(start, end + 1))
        return bounds, bounds

    def clean_cut(self, text: str, position: int) -> bool:
        return True


class _TokenMeasure:
    """Tokens, read from the offsets of one encoding of the whole text.

    ``bisect_left(starts, position)`` tokens start before ``position``, so a span holds the
    difference of that at its ends. Tokens never cross whitespace or punctuation (BERT's
    pre-tokenizer splits there first), so for spans cut there the count is exactly that of
    the span tokenized alone.
    """

    def __init__(self) -> None:
        # Machine integers: a quarter of the memory of lists of ints (~12 bytes a token).
        self._starts = array("l")
        self._ends = array("l")
        self._ids = array("l")

    def add(self, encoding: Encoding, offset: int) -> None:
        """Append the tokens of a part of the text that starts at ``offset``."""
        offsets = encoding.offsets
        self._starts.extend([start + offset for start, _ in offsets])
        self._ends.extend([end + offset for _, end in offsets])
        self._ids.extend(encoding.ids)

    def ranks(self, bounds: Sequence[int]) -> list[int]:
        starts = self._starts
        return [bisect_left(starts, bound) for bound in bounds]

    def atoms(self, start: int, end: int) -> tuple[list[int], list[int]]:
        """Cuts at token starts; a token longer than a storable chunk (an unknown "word" of
        many characters is one token) is cut by characters as well, each part counted as one
        token (the rare part that takes more alone is split again). Several tokens can
        share a start (a Hangul syllable decomposes into its letters)."""
        starts = self._starts
        inner = dict.fromkeys(starts[bisect_right(starts, start) : bisect_left(starts, end)])
        bounds = [start]
        ranks = [bisect_left(starts, start)]
        extra = 0  # parts of long tokens so far, beyond the first of each
        for bound in [*inner, end]:
            for cut in range(bounds[-1] + MAX_CHUNK_CHARS, bound, MAX_CHUNK_CHARS):
                extra += 1
                bounds.append(cut)
                ranks.append(ranks[-1] + 1)
            bounds.append(bound)
            ranks.append(bisect_left(starts, bound) + extra)
        return bounds, ranks

    def clean_cut(self, text: str, position: int) -> bool:
        """At the text's ends or whitespace, or between two tokens the second of which
        starts a word (not "##..."); a cut inside a word may tokenize differently alone."""
        if position in (0, len(text)) or text[position - 1].isspace() or text[position].isspace():
            return True
        index = bisect_left(self._starts, position)
        if index > 0 and self._ends[index - 1] > position:
            return False  # inside a token
        return index == len(self._ids) or self._ids[index] not in _continuation_ids()


def _token_measures(texts: Sequence[str]) -> list[_TokenMeasure]:
    """Token offsets of each text, tokenized once, in parallel (``encode_batch``).

    Texts are tokenized in parts of about ``_PART_CHARS`` cut at spaces or newlines, a few
    hundred thousand characters per call: one big document uses every core too, and the
    tokenizer's working memory (about 150 bytes a character for a whole 1 MB text at once)
    stays small. The normalizer works character by character and words end at whitespace,
    so the parts' tokens, shifted by the parts' offsets, are the whole text's.
    """
    measures = [_TokenMeasure() for _ in texts]
    group: list[tuple[int, int, str]] = []  # (text, offset of the part in it, part)
    chars = 0
    for number, text in enumerate(texts):
        start = 0
        while start < len(text):
            end = _part_end(text, start)
            group.append((number, start, text[start:end]))
            chars += end - start
            start = end
            if chars >= _GROUP_CHARS:
                _tokenize_group(group, measures)
                group, chars = [], 0
    _tokenize_group(group, measures)
    return measures


def _tokenize_group(group: list[tuple[int, int, str]], measures: list[_TokenMeasure]) -> None:
    encodings = model_tokenizer().encode_batch(
        [part for *_, part in group], add_special_tokens=False
    )
    for (number, offset, _), encoding in zip(group, encodings, strict=True):
        measures[number].add(encoding, offset)


def _part_end(text: str, start: int) -> int:
    """The end of the part of ``text`` from ``start``: the first space or newline after
    ``_PART_CHARS`` characters, or the end of the text."""
    match = _PART_CUT.search(text, start + _PART_CHARS)
    return match.start() if match else len(text)


@dataclass
class _Pass:
    """One recursive split of one text into stripped chunk spans (``spans``)."""

    text: str
    measure: _Measure
    size: int
    overlap: int
    separators: Sequence[re.Pattern[str]]

    def __post_init__(self) -> None:
        self.spans: list[tuple[int, int]] = []

    def split(self, start: int, end: int, level: int = 0) -> None:
        """Cut ``[start, end)`` at its most preferred separator from ``level`` on, merge the
        pieces into chunks and split pieces too big on their own at the next separators.

        The merge is langchain's, done by bisection over running totals instead of piece
        by piece: a chunk takes pieces while they fit; the next one starts with the last
        pieces of it worth at most ``overlap`` that leave room for the piece that did not
        fit. A piece too big alone ends the run (no overlap across it) and is split further.
        """
        bounds, ranks, next_level = self._pieces(start, end, level)
        pieces = len(bounds) - 1
        first = 0  # the chunk being built holds pieces first..stop-1
        while first < pieces:
            stop = self._fitting_end(bounds, ranks, first)
            if stop == first:  # this piece is too big on its own
                if next_level is None:
                    # One character over the size (a Hangul syllable is three tokens).
                    self.emit(bounds[first], bounds[first + 1])
                else:
                    self.split(bounds[first], bounds[first + 1], next_level)
                first += 1
                continue
            self.emit(bounds[first], bounds[stop])
            if stop == pieces or self._fitting_end(bounds, ranks, stop) == stop:
                first = stop  # the end, or a piece too big alone: no overlap
                continue
            first = max(
                bisect_left(ranks, ranks[stop] - self.overlap, first + 1, stop),
                bisect_left(ranks, ranks[stop + 1] - self.size, first + 1, stop),
                bisect_left(bounds, bounds[stop + 1] - MAX_CHUNK_CHARS, first + 1, stop),
            )

    def _fitting_end(self, bounds: list[int], ranks: list[int], first: int) -> int:
        """The end of the longest run of pieces from ``first`` within both limits."""
        units = bisect_right(ranks, ranks[first] + self.size, first + 1)
        chars = bisect_right(bounds, bounds[first] + MAX_CHUNK_CHARS, first + 1)
        return min(units, chars) - 1

    def _pieces(self, start: int, end: int, level: int) -> tuple[list[int], list[int], int | None]:
        """Bounds of the pieces of ``[start, end)`` (each piece begins with the separator
        that cut it), their ranks, and the level of the separators for pieces still too
        big (None: these are atoms)."""
        for index in range(level, len(self.separators)):
            separator = self.separators[index]
            if separator.search(self.text, start, end):
                bounds = [start]
                bounds.extend(
                    [
                        match.start()
                        for match in separator.finditer(self.text, start, end)
                        if match.start() > start
                    ]
                )
                bounds.append(end)
                return bounds, self.measure.ranks(bounds), index + 1
        bounds, ranks = self.measure.atoms(start, end)
        return bounds, ranks, None

    def emit(self, start: int, end: int) -> None:
        """Add ``[start, end)`` without its surrounding whitespace, unless blank."""
        text = self.text
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start < end:
            self.spans.append((start, end))


class Chunker:
    """Recursive splitting: paragraphs first, then lines, words, then between tokens.

    Every chunk is at most ``chunk_size`` units (tokens by default, counted on the chunk
    alone) and ``MAX_CHUNK_CHARS`` characters; neighbouring chunks share up to
    ``chunk_overlap`` units, so a sentence cut at a boundary is still found whole in one of
    them. With ``markdown`` the splitter prefers headings, code fences and horizontal rules
    as boundaries. Surrounding whitespace is stripped.
    """

    def __init__(
        self,
        chunk_size: int,
        chunk_overlap: int,
        *,
        markdown: bool = False,
        unit: Unit = "tokens",
        context: bool = False,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        if not 0 <= chunk_overlap < chunk_size:
            raise ValueError("chunk_overlap must be in [0, chunk_size)")
        self.config = ChunkingConfig(chunk_size, chunk_overlap, markdown, unit, context)
        self._separators = (
            [re.compile(separator) for separator in MARKDOWN_SEPARATORS]
            if markdown
            else [re.compile(re.escape(separator)) for separator in PLAIN_SEPARATORS]
        )

    @classmethod
    def from_config(cls, config: ChunkingConfig) -> Chunker:
        return cls(
            config.chunk_size,
            config.chunk_overlap,
            markdown=config.markdown,
            unit=config.unit,
            context=config.context,
        )

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    @property
    def chunk_overlap(self) -> int:
        return self.config.chunk_overlap

    def split(self, text: str) -> list[str]:
        """The chunks of ``text`` in order; empty only for blank text."""
        return self.split_many([text])[0]

    def split_many(self, texts: Sequence[str]) -> list[list[str]]:
        """The chunks of each text, as :meth:`split`; tokenizes texts in parallel batches."""
        chunks: list[list[str]] = []
        batch: list[str] = []
        batch_chars = 0
        for text in texts:
            if batch and batch_chars + len(text) > _BATCH_CHARS:
                chunks.extend(self._split_batch(batch))
                batch, batch_chars = [], 0
            batch.append(text)
            batch_chars += len(text)
        if batch:
            chunks.extend(self._split_batch(batch))
        return chunks

    def _split_batch(self, texts: list[str]) -> list[list[str]]:
        if self.config.unit == "chars":
            return [[text[a:b] for a, b in self._spans(text, _CharMeasure())] for text in texts]
        measures = _token_measures(texts)
        chunks: list[list[str]] = []
        suspects: list[tuple[int, int]] = []  # (text, chunk) of chunks cut inside a word
        for number, text in enumerate(texts):
            measure = measures[number]
            spans = self._spans(text, measure)
            chunks.append([text[a:b] for a, b in spans])
            suspects.extend(
                (number, index)
                for index, (a, b) in enumerate(spans)
                if not (measure.clean_cut(text, a) and measure.clean_cut(text, b))
            )
            measures[number] = _TokenMeasure()  # free the offsets early
        self._resplit_oversized(chunks, suspects)
        return chunks

    def _spans(self, text: str, measure: _Measure) -> list[tuple[int, int]]:
        run = _Pass(text, measure, self.chunk_size, self.chunk_overlap, self._separators)
        before_start, before_end = measure.ranks([0, len(text)])
        if before_end - before_start <= self.chunk_size and len(text) <= MAX_CHUNK_CHARS:
            run.emit(0, len(text))  # what splitting would give, without cutting it into words
        else:
            run.split(0, len(text))
        return run.spans

    def _resplit_oversized(self, chunks: list[list[str]], suspects: list[tuple[int, int]]) -> None:
        """Tokenize the chunks cut inside a word alone (the rest of a word can take more
        tokens than it did inside the word) and split again those over the size."""
        if not suspects:
            return
        alone = model_tokenizer().encode_batch(
            [chunks[number][index] for number, index in suspects], add_special_tokens=False
        )
        oversized = [
            place
            for place, encoding in zip(suspects, alone, strict=True)
            if len(encoding.ids) > self.chunk_size
        ]
        if not oversized:
            return
        # Each result is strictly shorter than its chunk, so this recursion ends.
        parts = self.split_many([chunks[number][index] for number, index in oversized])
        # Replace from the last so earlier indices stay valid.
        for (number, index), part in reversed(list(zip(oversized, parts, strict=True))):
            chunks[number][index : index + 1] = part


# Chunk context: the title and heading path of the place a chunk comes from.

# Document types (metadata "type", as the gateway sets it) whose text carries Markdown
# headings; in other documents a line starting with "# " may be a shell comment.
HEADING_TYPES = frozenset({"md", "markdown", "html", "htm", "docx", "pdf"})
# The separator of a heading path ("Title > Install > Linux").
PATH_SEPARATOR = " > "
# At most this many tokens of context go before a chunk's text (with the default 200-token
# chunks the two stay within the model's 254).
CONTEXT_TOKENS = 48
# Longest stored title and section path, in characters (VARCHAR fields of 4,096 bytes).
MAX_TITLE_CHARS = 500
MAX_SECTION_CHARS = 1_000
# An ATX heading ("## Install", optional closing #s) or a code fence line, which switches
# headings off until the fence closes. Setext headings (underlined) are not read.
_HEADING_OR_FENCE = re.compile(
    r"^ {0,3}(?:(?P<fence>```|~~~)[^\n]*"
    r"|(?P<marks>#{1,6})[ \t]+(?P<title>[^\n]*?)(?:[ \t]+#+)?[ \t]*)$",
    re.MULTILINE,
)


@dataclass(frozen=True)
class ChunkContext:
    """Where a chunk comes from: its document's title and the path of headings in effect
    at its start (outermost first, joined by ``PATH_SEPARATOR``); either may be empty."""

    title: str = ""
    section: str = ""

    def header(self, max_tokens: int = CONTEXT_TOKENS) -> str:
        """``title > section`` in one line, cut to ``max_tokens`` tokens ("" if none)."""
        header = PATH_SEPARATOR.join(part for part in (self.title, self.section) if part)
        header = " ".join(header.split())  # one line, whatever the headings held
        if not header or max_tokens <= 0:
            return ""
        encoding = model_tokenizer().encode(header, add_special_tokens=False)
        if len(encoding.ids) <= max_tokens:
            return header
        return header[: encoding.offsets[max_tokens - 1][1]].rstrip() + "…"


def headings(text: str) -> list[tuple[int, int, str]]:
    """The Markdown headings of ``text`` outside code fences: (position, level, title)."""
    found: list[tuple[int, int, str]] = []
    fence = ""
    for match in _HEADING_OR_FENCE.finditer(text):
        marker = match.group("fence")
        if marker:
            if not fence:
                fence = marker
            elif marker == fence:
                fence = ""
            continue
        title = " ".join(match.group("title").split())
        if not fence and title:
            found.append((match.start(), len(match.group("marks")), title))
    return found


def chunk_starts(text: str, chunks: Sequence[str]) -> list[int]:
    """Where each chunk of ``text`` (in order, as :meth:`Chunker.split` returns them)
    starts: each is a slice of the text starting after the previous one's start."""
    starts: list[int] = []
    cursor = 0
    for chunk in chunks:
        found = text.find(chunk, cursor)
        at = found if found >= 0 else cursor
        starts.append(at)
        cursor = at + 1
    return starts


def sections(text: str, chunks: Sequence[str], *, title: str = "") -> list[str]:
    """The heading path in effect at the start of each chunk ("" before any heading). A
    first heading equal to ``title`` is left out: the title already says it."""
    found = headings(text)
    if not found:
        return [""] * len(chunks)
    paths: list[str] = []
    stack: list[tuple[int, str]] = []
    next_heading = 0
    for start in chunk_starts(text, chunks):
        while next_heading < len(found) and found[next_heading][0] <= start:
            _, level, heading = found[next_heading]
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading))
            next_heading += 1
        names = [heading for _, heading in stack]
        if names and title and names[0].casefold() == title.casefold():
            names = names[1:]
        paths.append(PATH_SEPARATOR.join(names)[:MAX_SECTION_CHARS])
    return paths
