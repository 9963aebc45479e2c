"""JSON <-> Struct with integers restored (retrieval's metadata and filters, the gateway)."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from aimesh_common.structs import EXACT_INT_LIMIT, from_struct, restore_int, to_struct


def test_round_trip_gives_back_the_json_sent() -> None:
    sent: dict[str, Any] = {
        "year": 2020,
        "ratio": 0.5,
        "negative": -3,
        "tags": ["a", 1, 2.25, True, None],
        "nested": {"pages": 12, "ok": False, "deeper": [{"n": 7}]},
        "name": "x",
    }
    back = from_struct(to_struct(sent) or struct_pb2.Struct())
    assert back == sent
    assert isinstance(back["year"], int)
    assert isinstance(back["nested"]["deeper"][0]["n"], int)
    assert isinstance(back["tags"][1], int)
    assert isinstance(back["ratio"], float)
    assert back["tags"][3] is True  # booleans stay booleans, not 1


def test_none_stays_an_unset_field() -> None:
    assert to_struct(None) is None
    assert from_struct(struct_pb2.Struct()) == {}


def test_integers_are_restored_only_where_doubles_are_exact() -> None:
    assert restore_int(2020.0) == 2020
    assert isinstance(restore_int(2020.0), int)
    assert restore_int(-0.0) == 0
    assert isinstance(restore_int(float(EXACT_INT_LIMIT - 1)), int)
    # 2**53 + 1 arrives as 2**53 too: from there on an integral double may not be the
    # integer the client sent, so it stays a float.
    assert isinstance(restore_int(float(EXACT_INT_LIMIT)), float)
    assert isinstance(restore_int(1e300), float)
    assert restore_int(2.5) == 2.5
    assert restore_int(7) == 7
