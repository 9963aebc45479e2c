"""JSON objects to and from ``google.protobuf.Struct``, integers restored.

A Struct stores every number as a double, so a client's ``2020`` arrives as ``2020.0``.
Integral values in the exactly representable range (below 2**53) become ints again on the
way out, so callers get back the JSON they sent and stored metadata matches integer filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

EXACT_INT_LIMIT = 2**53
"""Doubles below this in magnitude hold every integer exactly (2**53 + 1 does not exist)."""


def restore_int(value: float | int) -> float | int:
    """An integral float becomes an int (``2020.0`` -> ``2020``); other numbers are kept."""
    if isinstance(value, float) and value.is_integer() and abs(value) < EXACT_INT_LIMIT:
        return int(value)
    return value


def restore_ints(value: Any) -> Any:
    """``value`` (plain JSON) with :func:`restore_int` applied to every number in it."""
    if isinstance(value, dict):
        return {key: restore_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [restore_ints(item) for item in value]
    if isinstance(value, float):
        return restore_int(value)
    return value


def to_struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    """A JSON object as a Struct; None stays None (an unset message field)."""
    if value is None:
        return None
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a plain JSON object, integral numbers as ints."""
    result = restore_ints(json_format.MessageToDict(struct))
    return result if isinstance(result, dict) else {}
