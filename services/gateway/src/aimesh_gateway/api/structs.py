"""JSON objects to and from ``google.protobuf.Struct``.

A Struct stores every number as a double, so ``2020`` comes back as ``2020.0``; integral
values within the exactly representable range are turned back into ints on the way out so
callers get back the JSON they sent.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

_EXACT_INT_LIMIT = 2**53


def to_struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    result = _restore_ints(json_format.MessageToDict(struct))
    assert isinstance(result, dict)
    return result


def _restore_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_INT_LIMIT:
        return int(value)
    if isinstance(value, dict):
        return {key: _restore_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_restore_ints(item) for item in value]
    return value


def score(value: float) -> float:
    """A float32 score from the wire, without the float32 noise (0.83, not 0.8299999833)."""
    return round(value, 6)
