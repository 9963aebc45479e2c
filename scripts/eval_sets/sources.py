"""Real text that ships on the machine: man pages (rendered by ``man``) and Python API
documentation read from source files with :mod:`ast` (nothing is imported or executed)."""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import os
import re
import subprocess
import sysconfig
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
MAN_SECTIONS = ("man1", "man8")
# gcloud's 16,000 generated pages repeat one template: they would swamp every other page.
MAN_SKIP_PREFIXES = ("gcloud",)

_SECTION = re.compile(r"^[A-Z][A-Z0-9 ,/&()'-]*$")
_OPTION_SAME_LINE = re.compile(r"^(-{1,2}[^\s].*?)\s{2,}(\S.*)$")


@dataclass
class ManOption:
    flags: str
    description: str


@dataclass
class ManPage:
    name: str  # "ls(1)"
    summary: str  # the NAME line after the dash
    sections: list[tuple[str, list[str]]]  # (heading, paragraphs) in order
    options: list[ManOption] = field(default_factory=list)

    @property
    def command(self) -> str:
        return self.name.split("(")[0]

    def section(self, heading: str) -> list[str]:
        for name, paragraphs in self.sections:
            if name == heading:
                return paragraphs
        return []


def man_files(root: Path = MAN_ROOT) -> list[Path]:
    """The pages of sections 1 and 8, real files only (aliases are symlinks), sorted."""
    found: list[Path] = []
    for section in MAN_SECTIONS:
        folder = root / section
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_symlink() or not path.name.endswith(".gz"):
                continue
            if path.name.startswith(MAN_SKIP_PREFIXES):
                continue
            with gzip.open(path, "rb") as handle:
                head = handle.read(200)
            if head.lstrip().startswith(b".so "):  # a redirect to another page
                continue
            found.append(path)
    return found


def render_man(path: Path) -> str:
    env = dict(os.environ, MANWIDTH="80", LANG="C.UTF-8", LC_ALL="C.UTF-8", MANPAGER="cat")
    rendered = subprocess.run(
        ["man", "--no-hyphenation", "--no-justification", "-l", str(path)],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    ).stdout
    # Remove overstrike (bold x\bx, underline _\bx) as col -b would.
    text = rendered.decode("utf-8", "replace")
    return re.sub(r".\x08", "", text)


def parse_man(path: Path, text: str) -> ManPage | None:
    lines = text.splitlines()
    body = [line.rstrip() for line in lines]
    nonblank = [i for i, line in enumerate(body) if line.strip()]
    if len(nonblank) < 4:
        return None
    body = body[nonblank[0] + 1 : nonblank[-1]]  # page header and footer
    sections: list[tuple[str, list[str]]] = []
    options: list[ManOption] = []
    heading = ""
    paragraph: list[str] = []
    current_option: ManOption | None = None
    paragraphs: list[str] = []

    def flush() -> None:
        nonlocal paragraph, current_option
        if current_option is not None:
            current_option.description = " ".join(paragraph).strip()
            if current_option.description:
                options.append(current_option)
                paragraphs.append(f"{current_option.flags}: {current_option.description}")
            current_option = None
        elif paragraph:
            paragraphs.append(" ".join(paragraph))
        paragraph = []

    for line in body:
        if line and not line[0].isspace() and _SECTION.match(line):
            flush()
            if heading:
                sections.append((heading, paragraphs))
            heading, paragraphs = line.strip(), []
            continue
        if not line.strip():
            if current_option is None or paragraph:
                flush()
            continue
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if indent == 7 and stripped.startswith("-") and heading not in ("NAME", "SYNOPSIS"):
            flush()
            same_line = _OPTION_SAME_LINE.match(stripped)
            if same_line:
                current_option = ManOption(same_line.group(1), "")
                paragraph = [same_line.group(2)]
            else:
                current_option = ManOption(stripped, "")
            continue
        paragraph.append(stripped)
    flush()
    if heading:
        sections.append((heading, paragraphs))
    name_lines = next((p for h, p in sections if h == "NAME"), [])
    if not name_lines:
        return None
    name_line = " ".join(name_lines)
    parts = re.split(r"\s+[-\u2014\u2013]+\s+", name_line, maxsplit=1)
    if len(parts) != 2:
        return None
    section_number = path.name.split(".")[-2]
    command = path.name[: -len(f".{section_number}.gz")]
    return ManPage(f"{command}({section_number})", parts[1].strip(), sections, options)


def rendered(files: list[Path], cache: Path | None, workers: int = 2) -> list[str]:
    """``render_man`` of each file, reusing ``cache`` (gzipped JSON keyed by path, size and
    modification time) for unchanged pages: rendering all pages takes minutes."""
    known: dict[str, str] = {}
    if cache is not None and cache.is_file():
        known = json.loads(gzip.decompress(cache.read_bytes()))

    def key(path: Path) -> str:
        stat = path.stat()
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"

    missing = [f for f in files if key(f) not in known]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, text in zip(missing, pool.map(render_man, missing), strict=True):
            known[key(path)] = text
    if cache is not None and missing:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(gzip.compress(json.dumps(known).encode()))
    return [known[key(f)] for f in files]


def man_pages(limit: int | None = None, cache: Path | None = None) -> list[ManPage]:
    """Parsed pages, each distinct rendered page once (aliases and copies dropped)."""
    files = man_files()[:limit]
    texts = rendered(files, cache)
    seen: set[str] = set()
    pages: list[ManPage] = []
    for path, text in zip(files, texts, strict=True):
        digest = hashlib.sha256(text.split("\n", 1)[-1].encode()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        page = parse_man(path, text)
        if page is not None:
            pages.append(page)
    return pages


# Python API documentation, read from source


# Top-level packages of the venv read for the long-document set: all pinned in constraints.txt,
# so the set is the same wherever `make install` ran.
PACKAGES = (
    "sympy",
    "networkx",
    "transformers",
    "sqlalchemy",
    "pandas",
    "langchain_core",
    "torch",
    "sklearn",
    "pydantic",
    "jinja2",
    "mpmath",
    "numpy",
    "scipy",
    "redis",
    "pymilvus",
)
STDLIB_SKIP = frozenset(
    {"idlelib", "lib2to3", "turtledemo", "ensurepip", "tkinter", "pydoc_data", "site-packages"}
)


@dataclass
class ApiEntry:
    qualname: str  # "Class.method" or "function"
    kind: str  # "function", "class" or "method"
    signature: str
    doc: str


@dataclass
class ModuleDoc:
    module: str  # dotted name
    doc: str
    entries: list[ApiEntry]


def _signature(node: ast.AST) -> str:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        args = ast.unparse(node.args)
        return f"({args})"
    if isinstance(node, ast.ClassDef):
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                args = ast.unparse(item.args)
                return f"({args.removeprefix('self, ').removeprefix('self')})"
        return "()"
    return ""


def _public(name: str) -> bool:
    return not name.startswith("_")


def read_module(path: Path, module: str) -> ModuleDoc | None:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None
    entries: list[ApiEntry] = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if not _public(node.name):
            continue
        doc = ast.get_docstring(node)
        if doc:
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            entries.append(ApiEntry(node.name, kind, _signature(node), doc))
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and _public(item.name):
                    method_doc = ast.get_docstring(item)
                    if method_doc:
                        signature = _signature(item).replace("(self, ", "(").replace("(self)", "()")
                        entries.append(
                            ApiEntry(f"{node.name}.{item.name}", "method", signature, method_doc)
                        )
    return ModuleDoc(module, ast.get_docstring(tree) or "", entries)


def _module_files(root: Path, prefix: str = "") -> Iterator[tuple[Path, str]]:
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        parts = list(rel.parts)
        if any(p in STDLIB_SKIP or p.startswith(("test", "_")) for p in parts[:-1]):
            continue
        stem = parts[-1][:-3]
        if stem.startswith("test") or (stem.startswith("_") and stem != "__init__"):
            continue
        if stem == "__init__":
            parts = parts[:-1]
        else:
            parts[-1] = stem
        if not parts or any(not p.isidentifier() for p in parts):
            continue
        yield path, ".".join([prefix, *parts] if prefix else parts)


def stdlib_modules() -> Iterator[ModuleDoc]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path, module in _module_files(root):
        if module.split(".")[0] in STDLIB_SKIP:
            continue
        found = read_module(path, module)
        if found is not None:
            yield found


def package_modules(packages: tuple[str, ...] = PACKAGES) -> Iterator[ModuleDoc]:
    root = Path(sysconfig.get_paths()["purelib"])
    for package in packages:
        folder = root / package
        if not folder.is_dir():
            continue
        for path, module in _module_files(folder, package):
            found = read_module(path, module)
            if found is not None:
                yield found
