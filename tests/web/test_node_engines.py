"""The Node promise holds: the README, the Makefile's check and web/package.json say Node
>= 20.19, and no package in the lock wants more (npm ci would warn EBADENGINE)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMISED = (20, 19, 0)


def _version(text: str) -> tuple[int, int, int]:
    major, minor, patch = [*(int(part) for part in re.findall(r"\d+", text)[:3]), 0, 0, 0][:3]
    return major, minor, patch


def _allows(condition: str, version: tuple[int, int, int]) -> bool:
    """One space-separated set of comparators (all must hold), npm semver style."""
    for comparator in re.sub(r"(>=|<=|>|<|=|\^|~)\s+", r"\1", condition).split():
        match = re.fullmatch(r"(\^|~|>=|>|<=|<|=)?v?([\d.x*]+)", comparator)
        assert match, f"unparsed engines comparator {comparator!r}"
        operator, number = match.group(1) or "", match.group(2)
        bound = _version(number)
        given = len(re.findall(r"\d+", number))
        if operator == "^":
            if not (version >= bound and version[0] == bound[0]):
                return False
        elif operator == "~":
            if not (version >= bound and version[:2] == bound[:2]):
                return False
        elif operator == ">=":
            if version < bound:
                return False
        elif operator == ">":
            if version <= bound:
                return False
        elif operator in ("<", "<="):
            if version > bound or (operator == "<" and version == bound):
                return False
        elif version[:given] != bound[:given]:  # "20" or "20.19": that major (and minor)
            return False
    return True


def satisfies(version: tuple[int, int, int], engines: str) -> bool:
    return any(_allows(part.strip(), version) for part in engines.split("||"))


def test_the_range_reader() -> None:
    assert satisfies((20, 19, 0), "^20.19.0 || >=22.12.0")
    assert satisfies((20, 19, 0), "18 || 20 || >=22")
    assert satisfies((20, 19, 0), ">=v12.22.7")
    assert not satisfies((20, 19, 0), "^22.22.2 || ^24.15.0 || >=26.0.0")
    assert not satisfies((20, 19, 0), "^20.20.0 || >=22")


def test_every_locked_package_runs_on_the_promised_node() -> None:
    lock = json.loads((ROOT / "web" / "package-lock.json").read_text(encoding="utf-8"))
    refused = {
        name: package["engines"]["node"]
        for name, package in lock["packages"].items()
        if isinstance(package.get("engines"), dict)
        and "node" in package["engines"]
        and not satisfies(PROMISED, package["engines"]["node"])
    }
    assert refused == {}, "pin versions that run on Node 20.19 (or change the promise)"


def test_the_promise_is_the_same_everywhere() -> None:
    package = json.loads((ROOT / "web" / "package.json").read_text(encoding="utf-8"))
    assert package["engines"]["node"] == ">=20.19"
    assert "Node.js >= 20.19" in (ROOT / "Makefile").read_text(encoding="utf-8")
