"""Build the retrieval eval sets (BEIR layout) from real text that ships on this machine.

``python -m scripts.eval_sets.build [--out DIR] [--sets a,b]``. Four sets of different
character and two larger run-time variants, each with at least 500 documents and 300
queries; every query is generated from its document's text by
:mod:`scripts.eval_sets.paraphrase` (seeded, so the same on every run), never copied
verbatim from it:

* ``manpages`` (committed, tests/data/retrieval-eval-manpages): natural-language questions
  over prose. Documents: the DESCRIPTION of man pages (sections 1 and 8, without option
  lists), at most ~600 characters. Queries: "which command can I use to ..." questions
  paraphrasing the page's one-line NAME summary (which the document does not contain).
* ``identifiers`` (committed, tests/data/retrieval-eval-identifiers): keyword and identifier
  look-ups. Documents: one per public function, class or method of ~70 standard-library
  modules (whole modules, so a module's siblings are the distractors), signature plus
  docstring. Queries: the identifier in another form ("dumps pickle", "Counter
  most_common", "urlsplit in urllib.parse").
* ``modules`` (generated at run time): short queries over long documents. Documents: the
  API reference of a Python module (module docstring, then every public function, class
  and method with its docstring), 3,000-6,000 characters, from the standard library and
  the pinned packages of PACKAGES. Queries: 2-4 keywords paraphrasing the module
  docstring's first line.
* ``manpage-options`` (generated at run time): the answer in the middle of a long document.
  Documents: whole man pages (up to 8,000 characters). Queries: the command and a
  paraphrase of one option's description, an option that sits between 30 % and 70 % of
  the page and whose description no other page shares: only the right chunk answers it.

* ``api-identifiers`` and ``modules-large`` (generated at run time): the identifier
  look-ups over 3,000 entries of the pinned packages (the same method names recur across
  their classes) and the short queries over every eligible module (1,073 here, against
  600): the same kinds of query where neither retriever alone is near recall@5 1.0, so
  that fusion methods can be told apart.

The committed sets are small; the run-time ones are written under .aimesh/eval-sets (a few
MB). Man pages depend on the Debian packages installed, the module set on the Python
version and the pinned packages: README.md of each set records what it was built from.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import platform
import random
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from scripts.eval_sets import paraphrase as para
from scripts.eval_sets import sources

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "tests" / "data"
GENERATED = ROOT / ".aimesh" / "eval-sets"
SEED = 16
MIN_DOCUMENTS = 500
MIN_QUERIES = 300


@dataclass
class EvalSet:
    name: str
    description: str
    corpus: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (title, text)
    queries: dict[str, str] = field(default_factory=dict)
    qrels: dict[str, str] = field(default_factory=dict)  # query id -> corpus id

    def add_queries(self, candidates: list[tuple[str, str]], count: int) -> None:
        """``count`` of the (doc id, query) candidates, chosen at random (seeded by the set's
        name), numbered q0000... in document order."""
        rng = para.rng_for(SEED, self.name, "queries")
        chosen = sorted(rng.sample(range(len(candidates)), min(count, len(candidates))))
        for number, index in enumerate(chosen):
            doc_id, query = candidates[index]
            self.queries[f"q{number:04d}"] = query
            self.qrels[f"q{number:04d}"] = doc_id

    @property
    def folder_name(self) -> str:
        return f"retrieval-eval-{self.name}"

    def write(self, parent: Path) -> Path:
        folder = parent / self.folder_name
        (folder / "qrels").mkdir(parents=True, exist_ok=True)
        with (folder / "corpus.jsonl").open("w", encoding="utf-8") as out:
            for doc_id, (title, text) in self.corpus.items():
                row = {"_id": doc_id, "title": title, "text": text}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        with (folder / "queries.jsonl").open("w", encoding="utf-8") as out:
            for query_id, text in self.queries.items():
                out.write(json.dumps({"_id": query_id, "text": text}, ensure_ascii=False) + "\n")
        with (folder / "qrels" / "test.tsv").open("w", encoding="utf-8") as out:
            out.write("query-id\tcorpus-id\tscore\n")
            for query_id, doc_id in self.qrels.items():
                out.write(f"{query_id}\t{doc_id}\t1\n")
        (folder / "README.md").write_text(
            f"# {self.folder_name}\n\n{self.description}\n\n"
            f"{len(self.corpus)} documents, {len(self.queries)} queries (one relevant document "
            "each). Generated by `python -m scripts.eval_sets.build` (seed "
            f"{SEED}) on Python {platform.python_version()}; do not edit by hand.\n\n"
            "Layout: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`), "
            "`qrels/test.tsv` (`query-id`, `corpus-id`, `score`, with a header line).\n",
            encoding="utf-8",
        )
        return folder


def _cut(paragraphs: Iterable[str], limit: int) -> str:
    """Whole paragraphs up to ``limit`` characters (the first one cut at a sentence end)."""
    out: list[str] = []
    size = 0
    for paragraph in paragraphs:
        if size + len(paragraph) > limit:
            if not out:
                sentences = re.split(r"(?<=[.!?])\s+", paragraph)
                kept = ""
                for sentence in sentences:
                    if len(kept) + len(sentence) > limit:
                        break
                    kept = f"{kept} {sentence}".strip()
                out.append(kept)
            break
        out.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(p for p in out if p)


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    return re.split(r"(?<=[.!?:;])\s", text, maxsplit=1)[0].rstrip(".:;")


def _make_query(make: Callable[[random.Random], str], document: str, *seed: object) -> str | None:
    """A query from ``make`` that is not verbatim in ``document`` (a few draws at most)."""
    for attempt in range(6):
        query = make(para.rng_for(SEED, *seed, attempt))
        if len(query.split()) >= 2 and not para.is_verbatim(query, document):
            return query
    return None


# (a) questions over prose


def build_manpages(
    pages: list[sources.ManPage], documents: int = 560, queries: int = 340
) -> EvalSet:
    summaries = collections.Counter(para.normalise(p.summary) for p in pages)
    eligible: list[tuple[sources.ManPage, str]] = []
    seen_text: set[str] = set()
    for page in pages:
        description = [p for p in page.section("DESCRIPTION") if not p.startswith("-")]
        text = _cut(description, 600)
        key = para.normalise(text)
        if len(text) < 150 or key in seen_text or len(para.words(page.summary)) < 3:
            continue
        if summaries[para.normalise(page.summary)] > 1:  # ambiguous: several pages say it
            continue
        seen_text.add(key)
        eligible.append((page, text))
    rng = para.rng_for(SEED, "manpages", "documents")
    picked = sorted(rng.sample(range(len(eligible)), min(documents, len(eligible))))
    result = EvalSet(
        "manpages",
        "Natural-language questions over prose: the DESCRIPTION of man pages (sections 1 "
        "and 8 of the Debian packages installed here, gcloud's generated pages left out), "
        "without option lists, at most ~600 characters; each query is a question "
        "paraphrasing the page's one-line NAME summary, which the document does not carry.",
    )
    candidates: list[tuple[str, str]] = []
    for number, index in enumerate(picked):
        page, text = eligible[index]
        doc_id = f"m{number:04d}"
        result.corpus[doc_id] = (page.name, text)
        query = _make_query(
            functools.partial(para.question, page.summary), f"{page.name}\n{text}", doc_id
        )
        if query is not None:
            candidates.append((doc_id, query))
    result.add_queries(candidates, queries)
    return result


# (b) identifier look-ups


_IDENTIFIER_TEMPLATES = {
    "function": (
        "{name} {mod}",
        "{mod} {name}",
        "{name} in {module}",
        "{mod} module {name} function",
    ),
    "class": ("{name} class {mod}", "{mod} {name}", "{name} in {module}"),
    "method": ("{cls} {name}", "{name} method of {cls}", "{mod} {cls} {name}", "{name} {cls}"),
}


_IDENTIFIERS_DESCRIPTION = (
    "Keyword and identifier look-ups: one document per public function, class or "
    "method (signature and docstring, at most ~450 characters) of whole standard-library "
    "modules, read from source with ast; each query names the identifier in another "
    "form (`dumps pickle`, `Counter most_common`, `urlsplit in urllib.parse`)."
)


def build_identifiers(
    modules: list[sources.ModuleDoc],
    documents: int = 620,
    queries: int = 360,
    name: str = "identifiers",
    description: str = _IDENTIFIERS_DESCRIPTION,
) -> EvalSet:
    rng = para.rng_for(SEED, name, "modules")
    usable = [m for m in modules if len(m.entries) >= 3 and "." not in m.module.split(".")[-1]]
    rng.shuffle(usable)
    result = EvalSet(name, description)
    entries: list[tuple[str, sources.ApiEntry]] = []
    seen_docs: set[str] = set()
    for source in usable:
        if len(entries) >= documents:
            break
        for entry in source.entries[:40]:
            key = para.normalise(entry.doc)
            if key in seen_docs:
                continue
            seen_docs.add(key)
            entries.append((source.module, entry))
    entries = entries[:documents]
    entries.sort(key=lambda item: (item[0], item[1].qualname))
    candidates: list[tuple[str, str]] = []
    for number, (module_name, entry) in enumerate(entries):
        doc_id = f"i{number:04d}"
        title = f"{module_name}.{entry.qualname}"
        body = _cut(entry.doc.split("\n\n"), 380) or entry.doc[:380]
        text = f"{entry.qualname.split('.')[-1]}{entry.signature[:200]}\n\n{body}"
        result.corpus[doc_id] = (title, text)
        cls, _, name = entry.qualname.rpartition(".")

        def make(
            r: random.Random,
            entry: sources.ApiEntry = entry,
            module: str = module_name,
            cls: str = cls,
            name: str = name,
        ) -> str:
            template = r.choice(_IDENTIFIER_TEMPLATES[entry.kind])
            mod = r.choice((module, module.split(".")[-1]))
            return str(template).format(name=name, cls=cls, mod=mod, module=module)

        query = _make_query(make, f"{title}\n{text}", doc_id)
        if query is not None:
            candidates.append((doc_id, query))
    result.add_queries(candidates, queries)
    return result


# (c) short queries over long documents


def module_text(module: sources.ModuleDoc, limit: int = 6_000) -> str:
    parts = [module.doc.strip()] if module.doc.strip() else []
    for entry in module.entries:
        parts.append(f"{entry.qualname}{entry.signature[:300]}\n{entry.doc.strip()}")
    return _cut(parts, limit)


def build_modules(
    modules: list[sources.ModuleDoc],
    documents: int = 600,
    queries: int = 350,
    name: str = "modules",
) -> EvalSet:
    firsts = collections.Counter(para.normalise(_first_sentence(m.doc)) for m in modules if m.doc)
    eligible: list[tuple[sources.ModuleDoc, str, str]] = []
    for module in modules:
        first = _first_sentence(module.doc) if module.doc else ""
        content = [w for w in para.words(first) if w not in para.STOPWORDS and len(w) > 1]
        if len(content) < 2 or firsts[para.normalise(first)] > 1:
            continue
        text = module_text(module)
        if len(text) < 3000:
            continue
        eligible.append((module, first, text))
    rng = para.rng_for(SEED, name, "documents")
    picked = sorted(rng.sample(range(len(eligible)), min(documents, len(eligible))))
    result = EvalSet(
        name,
        f"Short queries over long documents: the API reference of {len(picked)} Python "
        "modules (module docstring, then each public function, class and method with its "
        "docstring, 3,000-6,000 characters) from the standard library and the pinned "
        f"packages {', '.join(sources.PACKAGES)}; each query is 2-4 keywords paraphrasing "
        "the module docstring's first line.",
    )
    candidates: list[tuple[str, str]] = []
    for number, index in enumerate(picked):
        module, first, text = eligible[index]
        doc_id = f"p{number:04d}"
        result.corpus[doc_id] = (module.module, text)
        query = _make_query(
            functools.partial(para.keyword_query, first), f"{module.module}\n{text}", doc_id
        )
        if query is not None:
            candidates.append((doc_id, query))
    result.add_queries(candidates, queries)
    return result


# (d) the answer in the middle of a long document


def page_text(page: sources.ManPage, limit: int = 8_000) -> str:
    blocks: list[str] = [f"{page.command} - {page.summary}"]
    for heading, paragraphs in page.sections:
        if heading == "NAME":
            continue
        blocks.append(heading)
        blocks.extend(paragraphs)
    return _cut(blocks, limit)


_OPTION_TEMPLATES = (
    "{cmd}: how to {body}",
    "{cmd} option to {body}",
    "in {cmd}, {body}",
    "{body} with {cmd}",
    "which {cmd} flag makes it {body}",
)


def _option_query(command: str, description: str, rng: random.Random) -> str:
    tokens = [
        t for t in para.words(description) if not (t in para.STOPWORDS and rng.random() < 0.4)
    ]
    tokens = [t for t in tokens if not t.startswith("-")][:14]
    tokens = para.substitute(tokens, rng, 0.6)
    template: str = rng.choice(_OPTION_TEMPLATES)
    return template.format(cmd=command, body=" ".join(tokens))


def build_manpage_options(
    pages: list[sources.ManPage], documents: int = 560, queries: int = 340
) -> EvalSet:
    descriptions = collections.Counter(
        para.normalise(_first_sentence(o.description)) for p in pages for o in p.options
    )
    eligible: list[tuple[sources.ManPage, str, str]] = []
    for page in pages:
        text = page_text(page)
        if len(text) < 4000:
            continue
        middle: list[str] = []
        for option in page.options:
            sentence = _first_sentence(option.description)
            if len(para.words(sentence)) < 6 or descriptions[para.normalise(sentence)] > 1:
                continue
            at = text.find(f"{option.flags}: {option.description}")
            if 0.3 * len(text) <= at <= 0.7 * len(text):
                middle.append(sentence)
        if middle:
            choice = para.rng_for(SEED, "options", page.name).choice(middle)
            eligible.append((page, choice, text))
    # Long pages without such an option complete the corpus as distractors.
    with_query = {page.name for page, _, _ in eligible}
    others = [p for p in pages if p.name not in with_query and len(page_text(p)) >= 4000]
    rng = para.rng_for(SEED, "manpage-options", "documents")
    rng.shuffle(others)
    eligible += [(p, "", page_text(p)) for p in others[: max(0, documents - len(eligible))]]
    eligible.sort(key=lambda item: item[0].name)
    picked = sorted(rng.sample(range(len(eligible)), min(documents, len(eligible))))
    result = EvalSet(
        "manpage-options",
        "The answer in the middle of a long document: whole man pages (sections 1 and 8, up "
        "to 8,000 characters, several chunks each); each query names the command and "
        "paraphrases the description of one option that sits between 30 % and 70 % of the "
        "page and that no other page describes the same way.",
    )
    candidates: list[tuple[str, str]] = []
    for number, index in enumerate(picked):
        page, sentence, text = eligible[index]
        doc_id = f"o{number:04d}"
        result.corpus[doc_id] = (page.name, text)
        if not sentence:
            continue
        query = _make_query(
            functools.partial(_option_query, page.command, sentence),
            f"{page.name}\n{text}",
            doc_id,
        )
        if query is not None:
            candidates.append((doc_id, query))
    result.add_queries(candidates, queries)
    return result


# The same two kinds at a size where neither retriever saturates: the committed identifier
# look-ups and the 600 modules reach recall@5 0.99 with dense or BM25 alone, which leaves
# no room to tell fusion methods apart (issue 16 §2: hybrid at least max + 0.01).
API_IDENTIFIERS_DOCUMENTS = 3000
MODULES_LARGE_DOCUMENTS = 100_000  # every eligible module (1,073 on Python 3.11 here)


def build_api_identifiers(modules: list[sources.ModuleDoc]) -> EvalSet:
    return build_identifiers(
        modules,
        documents=API_IDENTIFIERS_DOCUMENTS,
        queries=400,
        name="api-identifiers",
        description=(
            "Identifier look-ups over a large API: one document per public function, class "
            "or method (signature and docstring, at most ~450 characters) of whole modules "
            f"of the pinned packages {', '.join(sources.PACKAGES)}, read from source with "
            "ast (the same method names recur across classes and modules); each query names "
            "the identifier in another form, as in the identifiers set."
        ),
    )


COMMITTED_SETS = ("manpages", "identifiers")
GENERATED_SETS = ("modules", "manpage-options", "api-identifiers", "modules-large")
ALL_SETS = COMMITTED_SETS + GENERATED_SETS


def build(names: Iterable[str]) -> list[EvalSet]:
    names = list(names)
    built: list[EvalSet] = []
    cache = GENERATED / "man-rendered.json.gz"
    pages = sources.man_pages(cache=cache) if {"manpages", "manpage-options"} & set(names) else []
    stdlib = (
        list(sources.stdlib_modules())
        if {"identifiers", "modules", "modules-large"} & set(names)
        else []
    )
    packages = (
        list(sources.package_modules())
        if {"modules", "api-identifiers", "modules-large"} & set(names)
        else []
    )
    for name in names:
        if name == "manpages":
            built.append(build_manpages(pages))
        elif name == "identifiers":
            built.append(build_identifiers(stdlib))
        elif name == "modules":
            built.append(build_modules(stdlib + packages))
        elif name == "api-identifiers":
            built.append(build_api_identifiers(packages))
        elif name == "modules-large":
            built.append(
                build_modules(stdlib + packages, MODULES_LARGE_DOCUMENTS, 400, name="modules-large")
            )
        elif name == "manpage-options":
            built.append(build_manpage_options(pages))
        else:
            raise SystemExit(f"unknown set {name!r} (use {', '.join(ALL_SETS)})")
    return built


def ensure_generated(parent: Path = GENERATED) -> list[Path]:
    """The run-time sets' folders, built first where missing."""
    missing = [n for n in GENERATED_SETS if not (parent / f"retrieval-eval-{n}" / "qrels").is_dir()]
    for built in build(missing):
        built.write(parent)
    return [parent / f"retrieval-eval-{n}" for n in GENERATED_SETS]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(ALL_SETS), help="Comma-separated set names")
    parser.add_argument(
        "--out",
        type=Path,
        help="Write every set here (default: committed "
        "sets under tests/data, run-time ones under .aimesh/eval-sets)",
    )
    args = parser.parse_args(argv)
    for built in build(s.strip() for s in args.sets.split(",") if s.strip()):
        parent = args.out or (COMMITTED if built.name in COMMITTED_SETS else GENERATED)
        folder = built.write(parent)
        print(
            f"{folder}: {len(built.corpus)} documents, {len(built.queries)} queries",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
