"""The limits on free-form JSON that the gateway and every gRPC service apply."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import struct_pb2

from aimesh_common.errors import InvalidArgument
from aimesh_common.jsonlimits import (
    MAX_BODY_DEPTH,
    MAX_EXACT_INT,
    MAX_INT,
    MAX_STRUCT_DEPTH,
    JsonLimitError,
    check_json,
    check_struct,
    loads,
    loads_argument,
)


def nested(levels: int, leaf: Any = 1) -> Any:
    """``levels`` containers around ``leaf``, objects and arrays in turn."""
    value = leaf
    for level in range(levels):
        value = {"k": value} if level % 2 else [value]
    return value


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[" * 33 + "]" * 33, "nested deeper than 32 levels"),
        ("[" * 200_000 + "]" * 200_000, "nested deeper than 32 levels"),
        ('{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        ('{"\\udc00": 1}', "lone UTF-16 surrogate"),
        (f'{{"a": {MAX_INT + 1}}}', "integer out of range"),
        (f'{{"a": {-MAX_INT - 1}}}', "integer out of range"),
        ('{"a": ' + "1" * 5000 + "}", "integer out of range"),
        ('{"a": NaN}', "NaN is not JSON"),
        ('{"a": -Infinity}', "-Infinity is not JSON"),
        ('{"a": 1e400}', "number is not finite"),
    ],
)
def test_loads_refuses_what_breaks_a_limit(text: str, problem: str) -> None:
    with pytest.raises(JsonLimitError) as caught:
        loads(text, "body", max_depth=MAX_BODY_DEPTH)
    assert problem in caught.value.problem
    assert str(caught.value).startswith("body")


def test_loads_takes_what_is_within_the_limits() -> None:
    text = json.dumps({"deep": nested(30), "max": MAX_INT, "min": -MAX_INT, "pair": "\U0001f600"})
    assert loads(text, "body", max_depth=MAX_BODY_DEPTH)["pair"] == "\U0001f600"
    with pytest.raises(json.JSONDecodeError):
        loads("{oops", "body", max_depth=MAX_BODY_DEPTH)


def test_check_json_names_the_place() -> None:
    with pytest.raises(JsonLimitError) as caught:
        check_json({"a": [1, {"b": 2**60}]}, "metadata", max_depth=4, max_int=MAX_EXACT_INT)
    assert str(caught.value) == (
        "metadata.a[1].b: integer out of range (magnitude at most 9007199254740992)"
    )
    with pytest.raises(JsonLimitError, match=r"^metadata\.a\.b: nested deeper than 2 levels$"):
        check_json({"a": {"b": {}}}, "metadata", max_depth=2)
    check_json({"a": {"b": 1, "ok": True}}, "metadata", max_depth=2)  # booleans are no numbers


def test_a_long_path_is_shortened_in_the_message() -> None:
    key = "k" * 500
    with pytest.raises(JsonLimitError) as caught:
        check_json({key: {key: {}}}, "body", max_depth=2)
    assert len(str(caught.value)) < 200


def test_check_struct_enforces_depth_and_finite_numbers() -> None:
    struct = struct_pb2.Struct()
    struct.update({"a": nested(MAX_STRUCT_DEPTH - 1)})
    check_struct(struct, "metadata")
    struct.update({"a": nested(MAX_STRUCT_DEPTH)})
    with pytest.raises(InvalidArgument, match="is nested deeper than 16 levels"):
        check_struct(struct, "metadata")
    struct = struct_pb2.Struct()
    struct.update({"list": [1, {"x": float("nan")}]})
    with pytest.raises(InvalidArgument, match=r"^filter\.list\[1\]\.x is not a finite number$"):
        check_struct(struct, "filter")


def test_loads_argument_is_invalid_argument() -> None:
    assert loads_argument('{"a": 1}', "arguments_json") == {"a": 1}
    with pytest.raises(InvalidArgument, match="arguments_json is not valid JSON"):
        loads_argument("{oops", "arguments_json")
    with pytest.raises(InvalidArgument, match="nested deeper than 16 levels"):
        loads_argument(json.dumps(nested(17)), "arguments_json")
