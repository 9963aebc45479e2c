"""Deterministic query paraphrasing for the generated eval sets.

A query is made from a phrase of its document (a man page's one-line summary, an option's
description, a module's first docstring line) and must not be a verbatim copy of it: words
are replaced by a synonym or a short description, function words dropped, content words
reordered, and the result put into a question template. Every choice comes from a
``random.Random`` seeded with a string, so a set is the same on every run.
"""

from __future__ import annotations

import random
import re

# Function words: dropped from keyword queries, sometimes from questions.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "for",
        "and",
        "or",
        "in",
        "on",
        "at",
        "by",
        "with",
        "from",
        "into",
        "as",
        "is",
        "are",
        "be",
        "been",
        "being",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "their",
        "there",
        "which",
        "who",
        "whom",
        "whose",
        "what",
        "when",
        "where",
        "how",
        "if",
        "then",
        "than",
        "so",
        "such",
        "any",
        "all",
        "each",
        "every",
        "some",
        "no",
        "not",
        "only",
        "also",
        "can",
        "may",
        "will",
        "would",
        "should",
        "could",
        "do",
        "does",
        "did",
        "via",
        "per",
        "using",
        "used",
        "use",
        "other",
        "others",
        "e.g",
        "i.e",
        "etc",
        "one",
    ]
)

# Synonyms or short descriptions of frequent terms of technical documentation (the terms,
# not queries: each generated query draws from these at random).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "list": ("show", "enumerate"),
    "display": ("show", "print out"),
    "show": ("display", "print"),
    "print": ("output", "write out"),
    "file": ("document on disk",),
    "files": ("documents on disk",),
    "directory": ("folder",),
    "directories": ("folders",),
    "create": ("make", "set up"),
    "creates": ("makes",),
    "remove": ("delete", "get rid of"),
    "removes": ("deletes",),
    "delete": ("remove", "erase"),
    "copy": ("duplicate",),
    "move": ("relocate",),
    "change": ("modify", "alter"),
    "changes": ("modifies",),
    "set": ("configure", "assign"),
    "get": ("obtain", "fetch"),
    "return": ("give back", "produce"),
    "returns": ("gives back", "yields"),
    "convert": ("transform", "turn"),
    "check": ("verify", "test"),
    "manage": ("administer", "handle"),
    "user": ("account",),
    "users": ("accounts",),
    "compress": ("shrink", "pack"),
    "decompress": ("unpack",),
    "search": ("look for", "find"),
    "find": ("locate", "look up"),
    "read": ("load",),
    "write": ("save", "store"),
    "start": ("launch", "begin"),
    "stop": ("halt", "end"),
    "run": ("execute",),
    "execute": ("run",),
    "information": ("details", "info"),
    "system": ("machine",),
    "program": ("tool", "application"),
    "command": ("tool",),
    "utility": ("tool", "program"),
    "string": ("text",),
    "strings": ("texts",),
    "number": ("count",),
    "output": ("result",),
    "input": ("data fed in",),
    "generate": ("produce", "make"),
    "generates": ("produces",),
    "key": ("secret",),
    "keys": ("secrets",),
    "network": ("net",),
    "server": ("daemon", "service"),
    "client": ("front end",),
    "package": ("bundle",),
    "packages": ("bundles",),
    "configuration": ("settings", "config"),
    "options": ("settings",),
    "option": ("setting",),
    "default": ("standard",),
    "error": ("failure",),
    "errors": ("failures",),
    "message": ("note",),
    "messages": ("notes",),
    "time": ("clock",),
    "process": ("task",),
    "processes": ("tasks",),
    "data": ("content",),
    "object": ("instance",),
    "objects": ("instances",),
    "function": ("routine", "callable"),
    "functions": ("routines",),
    "class": ("type",),
    "classes": ("types",),
    "module": ("library",),
    "support": ("handling",),
    "utilities": ("helpers",),
    "tools": ("utilities",),
    "implementation": ("code",),
    "interface": ("api",),
    "parse": ("analyse",),
    "parser": ("reader",),
    "parsing": ("reading",),
    "format": ("layout",),
    "text": ("wording",),
    "line": ("row",),
    "lines": ("rows",),
    "size": ("length",),
    "image": ("picture",),
    "terminal": ("console",),
    "install": ("set up",),
    "update": ("refresh",),
    "specified": ("given",),
    "specify": ("give",),
    "instead": ("rather",),
    "enable": ("turn on",),
    "disable": ("turn off",),
    "ignore": ("skip",),
    "include": ("add",),
    "exclude": ("leave out",),
    "mode": ("way of working",),
    "verbose": ("chatty",),
    "quiet": ("silent",),
    "recursive": ("nested",),
    "recursively": ("through subfolders",),
    "header": ("heading",),
    "archive": ("bundle file",),
    "database": ("db",),
    "memory": ("ram",),
    "device": ("hardware",),
    "devices": ("hardware units",),
    "kernel": ("os core",),
    "library": ("lib",),
    "manual": ("docs",),
    "matrix": ("2d array",),
    "graph": ("network of nodes",),
    "tokenizer": ("text splitter",),
    "model": ("network",),
}

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+#.'/-]*[A-Za-z0-9+#]|[A-Za-z0-9]")
_BRACKETS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")


def rng_for(*parts: object) -> random.Random:
    """A random generator seeded by ``parts`` (string seeds hash with SHA-512: stable)."""
    return random.Random(":".join(str(p) for p in parts))


def words(text: str) -> list[str]:
    """Lowercase words of ``text`` without bracketed asides."""
    text = _BRACKETS.sub(" ", text)
    return [w.lower().rstrip(".") for w in _WORD.findall(text)]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9+#_-]+", " ", text.lower()).split())


def substitute(tokens: list[str], rng: random.Random, rate: float) -> list[str]:
    """Each word with a synonym (or description) at probability ``rate``."""
    out: list[str] = []
    for token in tokens:
        options = SYNONYMS.get(token)
        out.append(rng.choice(options) if options and rng.random() < rate else token)
    return out


def keyword_query(phrase: str, rng: random.Random, most: int = 4) -> str:
    """A short keyword query: content words only, some replaced, at most ``most``, reordered."""
    content = [w for w in words(phrase) if w not in STOPWORDS and len(w) > 1]
    if len(content) > most:
        keep = sorted(rng.sample(range(len(content)), most))
        content = [content[i] for i in keep]
    content = substitute(content, rng, 0.5)
    if len(content) > 1 and rng.random() < 0.6:
        content = content[1:] + content[:1]
    return " ".join(content)


def question(phrase: str, rng: random.Random) -> str:
    """A paraphrase of ``phrase`` (a verb phrase or a noun phrase) as a question."""
    tokens = words(phrase)[:12]
    first = tokens[0] if tokens else ""
    verb_like = first in _VERBS or first.endswith(("ize", "ise", "ate", "ify"))
    tokens = [
        t for t in tokens if not (t in STOPWORDS and t not in {"to", "of"} and rng.random() < 0.5)
    ]
    tokens = substitute(tokens, rng, 0.6)
    templates = _VERB_TEMPLATES if verb_like else _NOUN_TEMPLATES
    template: str = rng.choice(templates)
    return template.format(" ".join(tokens))


# Verbs that start one-line summaries ("list directory contents").
_VERBS = frozenset(
    """add build send receive make manage query report dump edit view map mount unmount sort
    merge split join scan test trace watch wait kill lock unlock sign encrypt decrypt encode
    decode extract translate filter format compare count measure monitor control retrieve
    determine compute compile convert print display list copy remove delete change create
    show set get check search find read write run start stop install update generate verify
    validate apply prepare configure fetch download upload calculate provide register
    release rename replace resolve restore save select serve switch transfer unpack pack
    import export initialize initialise load inspect define tell recover decompress compress
    archive schedule execute sync collect record analyze analyse annotate benchmark emulate
    simulate wrap shrink strip upgrade downgrade probe capture detect manipulate modify
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
_VERB_TEMPLATES = (
    "how do I {}",
    "which command can I use to {}",
    "what tool would {} for me",
    "is there a program to {}",
    "I need to {}, what should I run",
)
_NOUN_TEMPLATES = (
    "which program is a {}",
    "what is the tool for {}",
    "looking for a {}",
    "where can I find a {}",
)


def is_verbatim(query: str, document: str) -> bool:
    """Whether the query, normalised, appears as is in the normalised document."""
    return normalise(query) in normalise(document)
