"""Limits on free-form JSON: nesting depth, number size, string validity.

The gateway checks every JSON request body against them once, at the edge (a 400 problem
naming the place); each gRPC service checks the free-form values it receives from any
caller (``google.protobuf.Struct`` metadata and filters, JSON text such as tool schemas)
against the same limits again (INVALID_ARGUMENT). Without them, such input fails deep
inside: Python's JSON decoder hits its recursion limit, protobuf refuses a Struct nested
past its own depth limit (about 33 object levels) or a string holding a lone surrogate,
and a ``uint32`` field refuses an integer of 2**63.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from google.protobuf import struct_pb2

from aimesh_common.errors import InvalidArgument

MAX_BODY_DEPTH = 32
"""Deepest nesting of objects and arrays in a JSON request body (the body itself is 1)."""
MAX_STRUCT_DEPTH = 16
"""Deepest nesting of objects and arrays in one free-form value: document metadata, a
search filter, a tool's parameter schema or arguments (the value itself is 1). Protobuf
spends about three of its 100 levels on each object level of a Struct."""
MAX_INT = 2**63 - 1
"""Largest integer magnitude anywhere in a request body (a signed 64-bit integer)."""
MAX_EXACT_INT = 2**53
"""Largest integer magnitude in a free-form value: a Struct keeps numbers as doubles, which
hold every integer exactly only up to here (2**53 + 1 would silently become 2**53)."""

_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonLimitError(ValueError):
    """A JSON value breaks a limit; ``path`` names the place (``body.metadata.a``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{_short(path)}: {problem}")
        self.path = path
        self.problem = problem


def _short(path: str, limit: int = 160) -> str:
    """``path`` for a message: long ones keep their start and end (keys may be long)."""
    if len(path) <= limit:
        return path
    half = (limit - 3) // 2
    return f"{path[:half]}...{path[-half:]}"


def _check_string(value: str, path: str) -> None:
    if _SURROGATE.search(value) is not None:
        raise JsonLimitError(path, "string holds a lone UTF-16 surrogate (not valid Unicode)")


def _check_number(value: int | float, path: str, max_int: int) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > max_int:
            raise JsonLimitError(path, f"integer out of range (magnitude at most {max_int})")
    elif not math.isfinite(value):
        raise JsonLimitError(path, "number is not finite")


def check_json(value: Any, path: str, *, max_depth: int, max_int: int = MAX_INT) -> None:
    """Raise :class:`JsonLimitError` when ``value`` (parsed JSON) nests deeper than
    ``max_depth`` objects and arrays, holds an integer beyond ``max_int`` in magnitude or a
    non-finite number, or a string (or key) with a lone surrogate. Iterative: a value nested
    too deep for recursion is still reported, not crashed on."""
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                raise JsonLimitError(where, f"nested deeper than {max_depth} levels")
            for key, child in item.items():
                _check_string(key, where)
                stack.append((child, f"{where}.{key}", depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                raise JsonLimitError(where, f"nested deeper than {max_depth} levels")
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
        elif isinstance(item, str):
            _check_string(item, where)
        elif isinstance(item, (int, float)):
            _check_number(item, where, max_int)


_MAX_INT_DIGITS = 400
"""Integer literals longer than this are refused while parsing (the place is unknown there);
shorter ones out of range are reported with their place by :func:`check_json`."""


def _reject_constant(name: str) -> Any:
    raise JsonLimitError("body", f"{name} is not JSON")


def _parse_int(text: str) -> int:
    # Refuse huge literals before converting them (int() of 4300+ digits raises anyway, and
    # the conversion's cost grows with the square of the length).
    if len(text) > _MAX_INT_DIGITS:
        raise JsonLimitError("body", f"integer out of range (magnitude at most {MAX_INT})")
    return int(text)


def loads(text: str | bytes, path: str, *, max_depth: int, max_int: int = MAX_INT) -> Any:
    """``json.loads`` within the limits of :func:`check_json` (``NaN`` and ``Infinity``,
    which Python's decoder accepts, are refused too). Malformed JSON raises
    :class:`json.JSONDecodeError` as usual; a limit :class:`JsonLimitError`."""
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except RecursionError:
        raise JsonLimitError(path, f"nested deeper than {max_depth} levels") from None
    except JsonLimitError as error:
        raise JsonLimitError(path, error.problem) from None
    check_json(value, path, max_depth=max_depth, max_int=max_int)
    return value


def check_struct(struct: struct_pb2.Struct, field: str, max_depth: int = MAX_STRUCT_DEPTH) -> None:
    """INVALID_ARGUMENT naming ``field`` when a received Struct nests deeper than
    ``max_depth`` or holds a non-finite number. (Protobuf itself guarantees valid UTF-8.)"""
    stack: list[tuple[struct_pb2.Struct | struct_pb2.ListValue, str, int]] = [(struct, field, 1)]
    while stack:
        container, where, depth = stack.pop()
        if depth > max_depth:
            raise InvalidArgument(f"{_short(where)} is nested deeper than {max_depth} levels")
        if isinstance(container, struct_pb2.Struct):
            items = [(f"{where}.{key}", value) for key, value in container.fields.items()]
        else:
            items = [(f"{where}[{i}]", value) for i, value in enumerate(container.values)]
        for place, value in items:
            kind = value.WhichOneof("kind")
            if kind == "struct_value":
                stack.append((value.struct_value, place, depth + 1))
            elif kind == "list_value":
                stack.append((value.list_value, place, depth + 1))
            elif kind == "number_value" and not math.isfinite(value.number_value):
                raise InvalidArgument(f"{_short(place)} is not a finite number")


def loads_argument(text: str, field: str, max_depth: int = MAX_STRUCT_DEPTH) -> Any:
    """JSON text received in a gRPC field, parsed within the limits; INVALID_ARGUMENT
    naming ``field`` when it is malformed or breaks one."""
    try:
        return loads(text, field, max_depth=max_depth)
    except JsonLimitError as error:
        raise InvalidArgument(str(error)) from None
    except ValueError as error:
        raise InvalidArgument(f"{field} is not valid JSON: {error}") from None
