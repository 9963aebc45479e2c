"""Build the QA eval sets: BEIR layout plus short gold answers, from real text shipped here.

``python -m scripts.eval_sets.qa [--out DIR] [--sets options,api]`` (``make qa-sets``).
Each set has at least 500 long-ish documents (several chunks each, so both retrieval and
extraction matter) and 300 questions whose gold answers are short strings of the document
(1-4 tokens). Questions are generated from the document's text by
:mod:`scripts.eval_sets.paraphrase` (seeded: the same on every run), never copied verbatim
from it, and never contain their own answer.

* ``options`` (tests/data/qa-eval-options): "which option of <command> <paraphrased
  description>?" over whole man pages (sections 1 and 8, at most ~4,000 characters).
  Answers: the option's flags as the page spells them (``-r``, ``--recursive``). Only
  options whose first description sentence no other page shares, and whose flags do not
  collide, case folded, with another flag of the same page.
* ``api`` (tests/data/qa-eval-api): questions on the API reference of Python modules (module
  docstring, then every public function, class and method with signature and docstring,
  at most ~4,000 characters) from the standard library and the pinned packages of
  ``sources.PACKAGES``, read with :mod:`ast`. Three kinds, about a third each:

  - ``exception``: "which exception does <function> raise <paraphrased condition>?", for a
    function whose docstring names exactly one exception; answer: its name (``KeyError``);
  - ``default``: "what does <parameter> of <function> default to?"; answer: the default as
    written in the signature, quotes dropped (``utf-8``, ``8192``); ``None``, booleans,
    ``-1``, ``0.0``, ``1.0`` and one-character values are left out (they would match a
    reply by chance);
  - ``parameter``: "which parameter of <function> <paraphrased description>?", from numpy,
    Sphinx (``:param x:``) or Google (``Args:``) style parameter lists; answer: the name.

Gold answers go in ``answers.jsonl`` beside ``queries.jsonl``, one line per query:
``{"_id": "q0000", "answers": ["-r", "--recursive"], "kind": "option"}``; a reply is
correct when it contains one of the answers (:func:`aimesh_cli.answers.contains_answer`:
case, quotes and whitespace normalised, whole tokens). ``aimesh eval --qa`` reads the file
when it is there.
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import platform
import random
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aimesh_cli.answers import ANSWERS_FILE, contains_answer, normalize
from scripts.eval_sets import build, sources
from scripts.eval_sets import paraphrase as para

SEED = 27
MIN_DOCUMENTS = 500
MIN_QUERIES = 300
DOCUMENT_CHARS = 4_000
PACKAGE_SHARE = 0.08


@dataclass(frozen=True)
class Candidate:
    doc_id: str
    question: str
    answers: tuple[str, ...]
    kind: str


@dataclass
class QASet(build.EvalSet):
    answers: dict[str, list[str]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def folder_name(self) -> str:
        return f"qa-eval-{self.name}"

    def add_candidates(self, candidates: list[Candidate], count: int) -> None:
        """``count`` candidates chosen at random (seeded by the set's name), as even across
        kinds as the candidates allow, at most one per document while documents last;
        numbered q0000... in document order."""
        rng = para.rng_for(SEED, self.name, "queries")
        order: dict[str, list[int]] = collections.defaultdict(list)
        for index, candidate in enumerate(candidates):
            order[candidate.kind].append(index)
        for indices in order.values():
            rng.shuffle(indices)
        chosen: list[int] = []
        used_docs: set[str] = set()
        # Round-robin over kinds; a second question on a document only once no kind has a
        # fresh document left.
        for allow_repeat in (False, True):
            pools = {k: [i for i in order[k] if i not in set(chosen)] for k in sorted(order)}
            while len(chosen) < count and any(pools.values()):
                for pool in pools.values():
                    while pool and len(chosen) < count:
                        index = pool.pop()
                        if allow_repeat or candidates[index].doc_id not in used_docs:
                            chosen.append(index)
                            used_docs.add(candidates[index].doc_id)
                            break
        chosen.sort(key=lambda i: (candidates[i].doc_id, i))
        for number, index in enumerate(chosen):
            candidate = candidates[index]
            query_id = f"q{number:04d}"
            self.queries[query_id] = candidate.question
            self.qrels[query_id] = candidate.doc_id
            self.answers[query_id] = list(candidate.answers)
            self.kinds[query_id] = candidate.kind

    def write(self, parent: Path) -> Path:
        folder = super().write(parent)
        with (folder / ANSWERS_FILE).open("w", encoding="utf-8") as out:
            for query_id, answers in self.answers.items():
                row = {"_id": query_id, "answers": answers, "kind": self.kinds[query_id]}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        kinds = collections.Counter(self.kinds.values())
        (folder / "README.md").write_text(
            f"# {self.folder_name}\n\n{self.description}\n\n"
            f"{len(self.corpus)} documents, {len(self.queries)} questions "
            f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), one relevant "
            "document each. Generated by `python -m scripts.eval_sets.qa` (seed "
            f"{SEED}) on Python {platform.python_version()}; do not edit by hand.\n\n"
            "Layout: BEIR (`corpus.jsonl` with `_id`, `title`, `text`; `queries.jsonl` with "
            "`_id`, `text`; `qrels/test.tsv` with `query-id`, `corpus-id`, `score` and a "
            "header line) plus `answers.jsonl`: `_id` (the query), `answers` (acceptable "
            "short gold answers), `kind`. A reply is correct when it contains one of the "
            "answers, case, quotes and whitespace normalised, as whole tokens "
            "(`aimesh_cli.answers.contains_answer`).\n",
            encoding="utf-8",
        )
        return folder


def _valid(question: str, answers: Iterable[str], document: str) -> bool:
    """A question that is not verbatim in its document, does not give its answer away, and
    whose answer the document holds."""
    answers = list(answers)
    return (
        len(question.split()) >= 4
        and not para.is_verbatim(question, document)
        and not contains_answer(question, answers)
        and contains_answer(document, answers)
    )


def _make(
    make: Callable[[random.Random], str], answers: tuple[str, ...], document: str, *seed: object
) -> str | None:
    for attempt in range(6):
        question = make(para.rng_for(SEED, *seed, attempt))
        if _valid(question, answers, document):
            return question
    return None


def _body(
    text: str, rng: random.Random, drop: Iterable[str] = (), most: int = 14, rate: float = 0.5
) -> list[str]:
    """Words of ``text`` (a description), ``drop`` and option-like words left out, some
    function words dropped, some words replaced by a synonym."""
    dropped = {normalize(d) for d in drop}
    tokens = [
        t
        for t in para.words(text)
        if not t.startswith("-")
        and t not in dropped
        and not (t in para.STOPWORDS and t not in {"to", "of", "not", "no"} and rng.random() < 0.35)
    ][:most]
    return para.substitute(tokens, rng, rate)


# (a) man page options

_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z0-9?#][\w?#.+-]*)")


def option_flags(flags: str) -> list[str]:
    """The flags of an option's heading: ``-o, --output=FILE`` gives ``-o``, ``--output``."""
    found: list[str] = []
    for flag in _FLAG.findall(flags):
        flag = flag.rstrip(".,")
        if flag not in found and len(flag) >= 2:
            found.append(flag)
    return found


_REFERS = re.compile(
    r"^(synonym|alias|same|equivalent|shorthand|short|deprecated|obsolete)\b|(?<![\w-])--?[a-z]",
    re.IGNORECASE,
)
_OPTION_QUESTIONS = (
    "which option of {cmd} {body}",
    "{cmd}: what flag {body}",
    "what is the {cmd} option that {body}",
    "which {cmd} switch should I pass to {body}",
    "in {cmd}, which command-line option {body}",
)


def build_options(pages: list[sources.ManPage], documents: int = 520, queries: int = 330) -> QASet:
    descriptions = collections.Counter(
        para.normalise(build._first_sentence(o.description)) for p in pages for o in p.options
    )
    eligible: list[tuple[sources.ManPage, str, list[tuple[list[str], str]]]] = []
    seen_text: set[str] = set()
    for page in pages:
        text = build.page_text(page, DOCUMENT_CHARS)
        key = para.normalise(text)
        if len(text) < 2000 or key in seen_text:
            continue
        seen_text.add(key)
        folded = collections.Counter(
            f.casefold() for option in page.options for f in option_flags(option.flags)
        )
        usable: list[tuple[list[str], str]] = []
        for option in page.options:
            sentence = build._first_sentence(option.description)
            flags = option_flags(option.flags)
            if not flags or len(para.words(sentence)) < 4 or _REFERS.search(sentence):
                continue  # too short, or defined by other options ("synonym for --x")
            if descriptions[para.normalise(sentence)] > 1:
                continue
            if any(folded[f.casefold()] > 1 for f in flags):
                continue
            if f"{option.flags}: {option.description[:60]}" not in text:
                continue  # cut off the document
            usable.append((flags, sentence))
        eligible.append((page, text, usable))
    with_options = [e for e in eligible if e[2]]
    without = [e for e in eligible if not e[2]]
    rng = para.rng_for(SEED, "options", "documents")
    rng.shuffle(with_options)
    rng.shuffle(without)
    picked = with_options[:documents] + without[: max(0, documents - len(with_options))]
    picked.sort(key=lambda item: item[0].name)
    result = QASet(
        "options",
        "Which option does what: whole man pages (sections 1 and 8 of the Debian packages "
        f"installed here, gcloud's generated pages left out, at most ~{DOCUMENT_CHARS:,} "
        "characters); each question names the command and paraphrases the first sentence "
        "of one option's description (one no other page shares); the gold answers are the "
        "option's flags as the page spells them.",
    )
    candidates: list[Candidate] = []
    for number, (page, text, usable) in enumerate(picked):
        doc_id = f"o{number:04d}"
        result.corpus[doc_id] = (page.name, text)
        for flags, sentence in usable:
            answers = tuple(flags)

            def make(r: random.Random, cmd: str = page.command, sentence: str = sentence) -> str:
                body = " ".join(_body(sentence, r, most=14, rate=0.6))
                return str(r.choice(_OPTION_QUESTIONS)).format(cmd=cmd, body=body)

            question = _make(make, answers, f"{page.name}\n{text}", doc_id, flags[0])
            if question is not None:
                candidates.append(Candidate(doc_id, question, answers, "option"))
    result.add_candidates(candidates, queries)
    return result


# (b) Python API reference

_EXCEPTION = re.compile(r"\b([A-Z][A-Za-z0-9]*(?:Error|Exception)|StopIteration)\b")
_CONDITION = re.compile(r"\b(if|when|whenever|unless|on|upon|for)\b\s+(.*)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BORING_DEFAULTS = frozenset({"none", "true", "false", "0", "1", "-1", "0.0", "1.0", ""})
_BORING_PARAMETERS = frozenset({"self", "cls", "args", "kwargs", "kwds", "kw"})


def parameter_defaults(signature: str) -> list[tuple[str, str]]:
    """``(name, default as written)`` of the parameters of ``signature`` (``(a, b=2)``) whose
    default is a literal worth asking about."""
    try:
        tree = ast.parse(f"def f{signature}: pass")
    except SyntaxError:
        return []
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    args = function.args
    positional = args.posonlyargs + args.args
    pairs = list(
        zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
    )
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d]
    found: list[tuple[str, str]] = []
    for arg, default in pairs:
        node = default
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            node = node.operand
        if not isinstance(node, ast.Constant) or isinstance(node.value, bool | bytes):
            continue
        if isinstance(node.value, str) and not (
            2 <= len(node.value) <= 24 and any(c.isalnum() for c in node.value)
        ):
            continue
        written = ast.unparse(default)
        if len(normalize(written)) < 2 or normalize(written) in _BORING_DEFAULTS:
            continue  # one character or a common value: found in a reply by chance
        if arg.arg in _BORING_PARAMETERS:
            continue
        found.append((arg.arg, written))
    return found


def _signature_names(signature: str) -> set[str]:
    try:
        tree = ast.parse(f"def f{signature}: pass")
    except SyntaxError:
        return set()
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    args = function.args
    return {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}


_NUMPY_SECTION = re.compile(r"^([A-Z][A-Za-z ]+)\n-{3,}\n", re.MULTILINE)
_SPHINX_PARAM = re.compile(r":param\s+(?:[^:\n]*\s)?(\w+):\s*(.+?)(?=\n\s*:|\n\s*\n|\Z)", re.DOTALL)
_GOOGLE_ARGS = re.compile(r"^(?:Args|Arguments|Parameters|Keyword Args):\s*\n", re.MULTILINE)


def parameter_descriptions(doc: str) -> list[tuple[str, str]]:
    """``(name, description)`` pairs of a docstring's parameter list (numpy, Sphinx or
    Google style); names with a comma (``x, y : int``) are left out."""
    found: list[tuple[str, str]] = []
    sections = list(_NUMPY_SECTION.finditer(doc))
    for index, section in enumerate(sections):
        if section.group(1).strip() not in ("Parameters", "Other Parameters"):
            continue
        end = sections[index + 1].start() if index + 1 < len(sections) else len(doc)
        name = ""
        lines: list[str] = []
        for line in [*doc[section.end() : end].splitlines(), ""]:
            if line and not line[0].isspace():
                if name and lines:
                    found.append((name, " ".join(lines)))
                head = re.match(r"^\*{0,2}(\w+)\s*(?::|$)", line)
                name, lines = (head.group(1) if head else ""), []
            elif line.strip() and name:
                lines.append(line.strip())
        if name and lines:
            found.append((name, " ".join(lines)))
    for match in _SPHINX_PARAM.finditer(doc):
        found.append((match.group(1), " ".join(match.group(2).split())))
    for match in _GOOGLE_ARGS.finditer(doc):
        name = ""
        lines = []
        for line in doc[match.end() :].splitlines():
            if not line.strip() or not line.startswith(" "):
                break
            head = re.match(r"^ {2,4}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if head and len(line) - len(line.lstrip()) <= 4:
                if name and lines:
                    found.append((name, " ".join(lines)))
                name, lines = head.group(1), [head.group(2)] if head.group(2) else []
            elif name:
                lines.append(line.strip())
        if name and lines:
            found.append((name, " ".join(lines)))
    return found


def raised_exceptions(doc: str) -> list[tuple[str, str]]:
    """``(exception, condition)`` for a docstring that names exactly one exception: the
    condition is the clause (``if ...``, ``when ...``) of a sentence naming it, or the
    description under a numpy ``Raises`` heading."""
    names = set(_EXCEPTION.findall(doc))
    if len(names) != 1:
        return []
    (name,) = names
    found: list[tuple[str, str]] = []
    raises = re.search(r"^Raises\n-{3,}\n\s*" + name + r"\s*\n((?:[ \t]+\S.*\n?)+)", doc, re.M)
    if raises:
        return [(name, " ".join(raises.group(1).split()))]
    for sentence in _SENTENCE_END.split(" ".join(doc.split())):
        if name not in sentence or not re.search(r"\brais", sentence, re.IGNORECASE):
            continue
        rest = sentence.replace(name, " ")
        clause = _CONDITION.search(rest)
        if clause is None:
            continue
        condition = f"{clause.group(1).lower()} {clause.group(2)}".rstrip(" .")
        if re.search(r"\brais", condition, re.IGNORECASE):
            continue
        found.append((name, condition))
    return found


def _content_words(text: str, drop: str = "") -> int:
    return sum(1 for w in para.words(text) if w not in para.STOPWORDS and w != drop.lower())


def api_name(module: str, qualname: str, rng: random.Random) -> tuple[str, str]:
    """How a question names a function: (function, module), in one of a few spellings."""
    short = module.split(".")[-1]
    return qualname, rng.choice((module, short)) if short != module else module


_EXCEPTION_QUESTIONS = (
    "which exception does {fn} in {mod} raise {cond}",
    "{mod} {fn}: what error is raised {cond}",
    "what does {fn} ({mod}) raise {cond}",
    "{cond}, which exception comes out of {mod}.{fn}",
)
_DEFAULT_QUESTIONS = (
    "what does the {param} argument of {fn} default to in {mod}",
    "{mod} {fn}: default value of {param}",
    "if I leave out {param} when calling {fn} ({mod}), what value is used",
    "which value does {param} take by default in {mod}.{fn}",
)
_PARAMETER_QUESTIONS = (
    "which parameter of {fn} in {mod} is the {body}",
    "{mod} {fn}: which argument gives the {body}",
    "what is the name of the {fn} ({mod}) argument for the {body}",
    "which keyword of {mod}.{fn} sets the {body}",
)


def _api_candidates(doc_id: str, module: sources.ModuleDoc, text: str) -> list[Candidate]:
    document = f"{module.module}\n{text}"
    candidates: list[Candidate] = []
    for entry in module.entries:
        header = f"{entry.qualname}{entry.signature[:300]}"
        if f"{header}\n{entry.doc.strip()[:200]}" not in text:
            continue  # not (wholly enough) in the document
        fn_name = entry.qualname
        seed = (doc_id, fn_name)
        for name, condition in raised_exceptions(entry.doc)[:1]:

            def make_exception(
                r: random.Random, condition: str = condition, fn: str = fn_name
            ) -> str:
                fn_, mod = api_name(module.module, fn, r)
                first, *rest = condition.split(" ", 1)
                body = " ".join([first, *_body(" ".join(rest), r, most=12)])
                return str(r.choice(_EXCEPTION_QUESTIONS)).format(fn=fn_, mod=mod, cond=body)

            if len(para.words(condition)) >= 3:
                question = _make(make_exception, (name,), document, *seed, "exception")
                if question is not None:
                    candidates.append(Candidate(doc_id, question, (name,), "exception"))
        for param, written in parameter_defaults(entry.signature)[:1]:
            value = ast.literal_eval(written)
            variants = (value if isinstance(value, str) else written,)

            def make_default(r: random.Random, param: str = param, fn: str = fn_name) -> str:
                fn_, mod = api_name(module.module, fn, r)
                return str(r.choice(_DEFAULT_QUESTIONS)).format(fn=fn_, mod=mod, param=param)

            question = _make(make_default, variants, document, *seed, "default")
            if question is not None:
                candidates.append(Candidate(doc_id, question, variants, "default"))
        names = _signature_names(entry.signature)
        described = [
            (p, build._first_sentence(d))
            for p, d in parameter_descriptions(entry.doc)
            if p in names and p not in _BORING_PARAMETERS and len(p) >= 2
        ]
        firsts = collections.Counter(para.normalise(d) for _, d in described)
        described = [
            (p, d)
            for p, d in described
            if firsts[para.normalise(d)] == 1 and _content_words(d, p) >= 3
        ]
        if described:
            param, sentence = para.rng_for(SEED, *seed, "pick").choice(described)

            def make_parameter(
                r: random.Random, sentence: str = sentence, param: str = param, fn: str = fn_name
            ) -> str:
                fn_, mod = api_name(module.module, fn, r)
                tokens = _body(sentence, r, drop=[param], most=12)
                while tokens and tokens[0] in ("the", "a", "an"):
                    tokens = tokens[1:]
                body = " ".join(tokens)
                return str(r.choice(_PARAMETER_QUESTIONS)).format(fn=fn_, mod=mod, body=body)

            question = _make(make_parameter, (param,), document, *seed, "parameter")
            if question is not None:
                candidates.append(Candidate(doc_id, question, (param,), "parameter"))
    return candidates


def build_api(modules: list[sources.ModuleDoc], documents: int = 520, queries: int = 330) -> QASet:
    eligible: list[tuple[sources.ModuleDoc, str]] = []
    seen: set[str] = set()
    for module in modules:
        text = build.module_text(module, DOCUMENT_CHARS)
        key = para.normalise(text)
        if len(text) < 2000 or key in seen:
            continue
        seen.add(key)
        eligible.append((module, text))
    rng = para.rng_for(SEED, "api", "documents")
    # Documents with a question first (so the 300 questions spread over many), the others
    # as distractors.
    scored = [(bool(_api_candidates("x", m, t)), m.module, m, t) for m, t in eligible]
    with_questions = [(m, t) for ok, _, m, t in scored if ok]
    without = [(m, t) for ok, _, m, t in scored if not ok]
    rng.shuffle(with_questions)
    rng.shuffle(without)
    # At most PACKAGE_SHARE of the documents from one package (the standard library's
    # modules count one by one): transformers alone has hundreds of near-identical modules.
    per_package: collections.Counter[str] = collections.Counter()

    def spread(items: list[tuple[sources.ModuleDoc, str]]) -> list[tuple[sources.ModuleDoc, str]]:
        kept = []
        for module, text in items:
            package = module.module.split(".")[0]
            if package in sources.PACKAGES:
                if per_package[package] >= PACKAGE_SHARE * documents:
                    continue
                per_package[package] += 1
            kept.append((module, text))
        return kept

    with_questions = spread(with_questions)[:documents]
    without = spread(without)
    picked = with_questions[:documents] + without[: max(0, documents - len(with_questions))]
    picked.sort(key=lambda item: item[0].module)
    result = QASet(
        "api",
        "Questions on Python API references: a module's docstring, then each public "
        "function, class and method with signature and docstring (at most "
        f"~{DOCUMENT_CHARS:,} characters), read with ast from the standard library and the "
        f"pinned packages {', '.join(sources.PACKAGES)}. Three kinds of question: which "
        "exception a function raises under a paraphrased condition (answer: the exception), "
        "what a parameter defaults to (answer: the default as written, quotes dropped), which "
        "parameter a paraphrased description belongs to (answer: its name).",
    )
    candidates: list[Candidate] = []
    for number, (module, text) in enumerate(picked):
        doc_id = f"a{number:04d}"
        result.corpus[doc_id] = (module.module, text)
        candidates.extend(_api_candidates(doc_id, module, text))
    result.add_candidates(candidates, queries)
    return result


QA_SETS = ("options", "api")


def build_sets(names: Iterable[str]) -> list[QASet]:
    names = list(names)
    built: list[QASet] = []
    for name in names:
        if name == "options":
            pages = sources.man_pages(cache=build.GENERATED / "man-rendered.json.gz")
            built.append(build_options(pages))
        elif name == "api":
            modules = list(sources.stdlib_modules()) + list(sources.package_modules())
            built.append(build_api(modules))
        else:
            raise SystemExit(f"unknown set {name!r} (use {', '.join(QA_SETS)})")
    return built


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(QA_SETS), help="Comma-separated set names")
    parser.add_argument("--out", type=Path, default=build.COMMITTED, help="Parent folder")
    args = parser.parse_args(argv)
    for built in build_sets(s.strip() for s in args.sets.split(",") if s.strip()):
        folder = built.write(args.out)
        kinds = collections.Counter(built.kinds.values())
        print(
            f"{folder}: {len(built.corpus)} documents, {len(built.queries)} questions "
            f"({dict(sorted(kinds.items()))})",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
