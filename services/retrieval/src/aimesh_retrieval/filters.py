"""Safe Milvus boolean expressions from aimesh's JSON filter language.

Clients never write Milvus expressions. They send a JSON filter (a ``google.protobuf.Struct``)
such as ``{"lang": "en"}`` or ``{"$and": [{"year": {"$gte": 2020}}, {"tag": {"$in": ["a"]}}]}``,
and :func:`translate_filter` builds the expression from a whitelist: keys must be plain
identifiers, values plain scalars, and every string goes through :func:`quote`. No text from
the client is ever spliced into an expression unescaped.

Language:

* ``{"k": v}`` means ``k == v``; several keys in one object are ANDed.
* ``{"k": {"$eq"|"$ne"|"$gt"|"$gte"|"$lt"|"$lte": v}}``; several operators are ANDed.
* ``{"k": {"$in": [v, ...]}}`` (non-empty, at most 100 values).
* ``{"$and": [filter, ...]}`` and ``{"$or": [filter, ...]}`` (non-empty lists of objects).

Values are strings, numbers or booleans (the ordering operators take strings or numbers).
Keys address the document metadata (``metadata["k"]``). A document without the key
matches no comparison on it, with one backend difference (checked): Milvus Lite leaves it
out of ``$ne`` too, a Milvus 2.3.5 server counts it as matching ``$ne``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from aimesh_common.errors import InvalidArgument
from aimesh_common.structs import restore_int

MAX_DEPTH = 8
"""Deepest nesting of ``$and``/``$or`` (the top-level object is depth 1)."""
MAX_LIST_ITEMS = 100
"""Most values of ``$in`` and most clauses of one ``$and``/``$or``."""
MAX_COMPARISONS = 1000
"""Most comparisons in one expression, ``$in`` values included; bounds the expression size."""
MAX_STRING_CHARS = 4096
"""Longest string value."""

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_COMPARISONS = {
    "$eq": "==",
    "$ne": "!=",
    "$gt": ">",
    "$gte": ">=",
    "$lt": "<",
    "$lte": "<=",
}
_ORDERING = frozenset({"$gt", "$gte", "$lt", "$lte"})
_INT64 = 2**63


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def quote(value: str) -> str:
    """A Milvus string literal for ``value``: double-quoted, ``\\`` and ``"`` escaped.

    Control characters are rejected rather than escaped: Milvus would interpret escape
    sequences such as ``\\n`` itself, and no legitimate metadata value needs them.
    """
    if any(_is_control(char) for char in value):
        raise ValueError("string contains a control character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Translator:
    def __init__(self, field: str) -> None:
        self._field = field
        self._comparisons = 0

    def fail(self, path: str, problem: str) -> InvalidArgument:
        return InvalidArgument(f"{path}: {problem}")

    def count(self, path: str, amount: int = 1) -> None:
        self._comparisons += amount
        if self._comparisons > MAX_COMPARISONS:
            raise self.fail(path, f"filter has more than {MAX_COMPARISONS} comparisons")

    def literal(self, value: object, path: str, *, ordering: bool = False) -> str:
        if isinstance(value, bool):
            if ordering:
                raise self.fail(path, "ordering operators take a number or a string")
            return "true" if value else "false"
        if isinstance(value, int | float):
            # Struct numbers are doubles: a client's 2020 arrives as 2020.0.
            number = restore_int(value)
            if isinstance(number, float):
                if not math.isfinite(number):
                    raise self.fail(path, "number must be finite")
                return repr(number)
            if not -_INT64 <= number < _INT64:
                raise self.fail(path, "integer out of the 64-bit range")
            return str(number)
        if isinstance(value, str):
            if len(value) > MAX_STRING_CHARS:
                raise self.fail(path, f"string longer than {MAX_STRING_CHARS} characters")
            try:
                return quote(value)
            except ValueError as error:
                raise self.fail(path, str(error)) from None
        raise self.fail(path, f"expected a string, number or boolean, got {_kind(value)}")

    def node(self, spec: object, path: str, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise self.fail(path, f"filter nested deeper than {MAX_DEPTH} levels")
        if not isinstance(spec, Mapping):
            raise self.fail(path, f"expected an object, got {_kind(spec)}")
        if not spec:
            raise self.fail(path, "empty object")
        clauses: list[str] = []
        for key, value in spec.items():
            if not isinstance(key, str):
                raise self.fail(path, "keys must be strings")
            if key in ("$and", "$or"):
                clauses.append(self.logical(key, value, f"{path}.{key}", depth))
            elif key.startswith("$"):
                raise self.fail(
                    f"{path}.{_shown(key)}", "unknown operator here (only $and and $or)"
                )
            else:
                clauses.append(self.key(key, value, f"{path}.{_shown(key)}"))
        return _join(clauses, "and")

    def logical(self, operator: str, value: object, path: str, depth: int) -> str:
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise self.fail(path, f"expected a list of filter objects, got {_kind(value)}")
        if not value:
            raise self.fail(path, "list must not be empty")
        if len(value) > MAX_LIST_ITEMS:
            raise self.fail(path, f"list has more than {MAX_LIST_ITEMS} items")
        parts = [self.node(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
        return _join(parts, operator[1:])

    def key(self, key: str, value: object, path: str) -> str:
        if not _KEY.match(key):
            raise self.fail(
                path, "metadata keys must match [A-Za-z_][A-Za-z0-9_]* (at most 64 characters)"
            )
        target = f"{self._field}[{quote(key)}]"
        if not isinstance(value, Mapping):
            if isinstance(value, Sequence) and not isinstance(value, str | bytes):
                raise self.fail(path, "a list needs an operator ($in)")
            self.count(path)
            return f"{target} == {self.literal(value, path)}"
        if not value:
            raise self.fail(path, "empty operator object")
        clauses: list[str] = []
        for operator, operand in value.items():
            op_path = f"{path}.{_shown(str(operator))}"
            if operator == "$in":
                clauses.append(self.membership(target, operand, op_path))
            elif operator in _COMPARISONS:
                self.count(op_path)
                literal = self.literal(operand, op_path, ordering=operator in _ORDERING)
                clauses.append(f"{target} {_COMPARISONS[operator]} {literal}")
            else:
                raise self.fail(op_path, "unknown operator (use $eq $ne $in $gt $gte $lt $lte)")
        return _join(clauses, "and")

    def membership(self, target: str, operand: object, path: str) -> str:
        # Milvus Lite rejects `json["k"] in [...]` ("left side of 'in' must be a field
        # reference"), so $in becomes a disjunction of equalities, which works everywhere.
        if not isinstance(operand, Sequence) or isinstance(operand, str | bytes):
            raise self.fail(path, f"expected a list, got {_kind(operand)}")
        if not operand:
            raise self.fail(path, "list must not be empty")
        if len(operand) > MAX_LIST_ITEMS:
            raise self.fail(path, f"list has more than {MAX_LIST_ITEMS} items")
        self.count(path, len(operand))
        parts = [
            f"{target} == {self.literal(item, f'{path}[{i}]')}" for i, item in enumerate(operand)
        ]
        return _join(parts, "or")


def _join(parts: list[str], operator: str) -> str:
    if len(parts) == 1:
        return parts[0]
    return f" {operator} ".join(f"({part})" for part in parts)


def _shown(key: str) -> str:
    """A key as it appears in an error path: printable and bounded."""
    clean = "".join(char if not _is_control(char) else "?" for char in key)
    return clean if len(clean) <= 64 else clean[:61] + "..."


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return "a list"
    return type(value).__name__


def translate_filter(
    spec: Mapping[str, Any] | None, *, field: str = "metadata", path: str = "filter"
) -> str:
    """The Milvus expression for a JSON filter; ``""`` for no filter (``None`` or ``{}``).

    Raises :class:`InvalidArgument` whose message starts with the path of the offending
    part, e.g. ``filter.$and[1].year.$gt: ordering operators take a number or a string``.
    """
    if spec is None or (isinstance(spec, Mapping) and not spec):
        return ""
    return _Translator(field).node(spec, path, 1)
