"""The JSON filter language and string quoting (pure functions; Milvus runs them in test_store)."""

from __future__ import annotations

import pytest

from aimesh_common.errors import InvalidArgument
from aimesh_retrieval.filters import MAX_DEPTH, quote, translate_filter


@pytest.mark.parametrize(
    ("raw", "literal"),
    [
        ("plain", '"plain"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ('\\"', '"\\\\\\""'),
        ("it's", '"it\'s"'),
        ("ünï €", '"ünï €"'),
        ("", '""'),
    ],
)
def test_quote_escapes_backslash_and_double_quote(raw: str, literal: str) -> None:
    assert quote(raw) == literal


@pytest.mark.parametrize("raw", ["a\nb", "a\x00b", "tab\there", "del\x7f", "c1\x85"])
def test_quote_rejects_control_characters(raw: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        quote(raw)


def test_quote_output_cannot_close_the_literal_early() -> None:
    # Every double quote inside the literal is preceded by an odd number of backslashes.
    for raw in ['a" or id != "x', '\\" or true or "', '\\\\"', '"""']:
        body = quote(raw)[1:-1]
        for pos, char in enumerate(body):
            if char == '"':
                run = len(body[:pos]) - len(body[:pos].rstrip("\\"))
                assert run % 2 == 1, (raw, body)


def test_no_filter_is_empty_expression() -> None:
    assert translate_filter(None) == ""
    assert translate_filter({}) == ""


def test_plain_value_means_eq() -> None:
    assert translate_filter({"lang": "en"}) == 'metadata["lang"] == "en"'


@pytest.mark.parametrize(
    ("operator", "symbol"),
    [("$eq", "=="), ("$ne", "!="), ("$gt", ">"), ("$gte", ">="), ("$lt", "<"), ("$lte", "<=")],
)
def test_comparison_operators(operator: str, symbol: str) -> None:
    assert translate_filter({"year": {operator: 2020}}) == f'metadata["year"] {symbol} 2020'


def test_value_types() -> None:
    assert translate_filter({"a": True}) == 'metadata["a"] == true'
    assert translate_filter({"a": False}) == 'metadata["a"] == false'
    assert translate_filter({"a": 7}) == 'metadata["a"] == 7'
    assert translate_filter({"a": -7}) == 'metadata["a"] == -7'
    assert translate_filter({"a": 2.5}) == 'metadata["a"] == 2.5'
    # Struct numbers are doubles: an integral one is written as an integer.
    assert translate_filter({"a": 2020.0}) == 'metadata["a"] == 2020'
    assert translate_filter({"a": 1e300}) == 'metadata["a"] == 1e+300'
    assert translate_filter({"a": {"$lt": "m"}}) == 'metadata["a"] < "m"'


def test_in_becomes_a_disjunction() -> None:
    assert translate_filter({"tag": {"$in": ["a", "b"]}}) == (
        '(metadata["tag"] == "a") or (metadata["tag"] == "b")'
    )
    assert translate_filter({"tag": {"$in": [1]}}) == 'metadata["tag"] == 1'


def test_several_keys_and_operators_are_anded() -> None:
    assert translate_filter({"lang": "en", "year": {"$gte": 2020, "$lt": 2024}}) == (
        '(metadata["lang"] == "en") and ((metadata["year"] >= 2020) and (metadata["year"] < 2024))'
    )


def test_and_or_nesting() -> None:
    spec = {
        "$and": [
            {"year": {"$gte": 2020}},
            {"$or": [{"tag": {"$in": ["a", "b"]}}, {"draft": False}]},
        ]
    }
    assert translate_filter(spec) == (
        '(metadata["year"] >= 2020) and '
        '(((metadata["tag"] == "a") or (metadata["tag"] == "b")) or '
        '(metadata["draft"] == false))'
    )


def test_custom_field_and_path() -> None:
    assert translate_filter({"k": 1}, field="meta") == 'meta["k"] == 1'
    with pytest.raises(InvalidArgument, match=r"^where\.k"):
        translate_filter({"k": None}, path="where")


@pytest.mark.parametrize(
    "value",
    [
        'en" or metadata["lang"] != "x',
        'a" or tenant != "x',
        'x") or (1 == 1',
        "\\",
        '\\" or true or "',
    ],
)
def test_injection_attempts_stay_inside_one_literal(value: str) -> None:
    expr = translate_filter({"lang": value})
    assert expr == f'metadata["lang"] == {quote(value)}'
    # The comparison has exactly one unescaped string literal: the quoted value.
    assert expr.startswith('metadata["lang"] == "')
    assert expr.endswith('"')


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({'a"]) or (id': 1}, 'filter.a"]) or (id'),
        ({"1abc": 1}, "filter.1abc"),
        ({"a-b": 1}, "filter.a-b"),
        ({"a.b": 1}, "filter.a.b"),
        ({"": 1}, "filter."),
        ({"k" * 65: 1}, "filter."),
        ({"ünï": 1}, "filter.ünï"),
    ],
)
def test_bad_keys_are_rejected(spec: dict[str, object], path: str) -> None:
    with pytest.raises(InvalidArgument, match="metadata keys must match") as caught:
        translate_filter(spec)
    assert caught.value.message.startswith(path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"a": None}, r"^filter\.a: expected a string, number or boolean, got null"),
        ({"a": {"b": 1}}, r"^filter\.a\.b: unknown operator"),
        ({"a": {"$regex": ".*"}}, r"^filter\.a\.\$regex: unknown operator"),
        ({"a": {"$where": "1"}}, r"^filter\.a\.\$where: unknown operator"),
        ({"$not": {"a": 1}}, r"^filter\.\$not: unknown operator here"),
        ({"a": {}}, r"^filter\.a: empty operator object"),
        ({"a": [1, 2]}, r"^filter\.a: a list needs an operator"),
        ({"a": {"$in": []}}, r"^filter\.a\.\$in: list must not be empty"),
        ({"a": {"$in": "abc"}}, r"^filter\.a\.\$in: expected a list, got str"),
        ({"a": {"$in": list(range(101))}}, r"^filter\.a\.\$in: list has more than 100"),
        ({"a": {"$in": [1, {"b": 2}]}}, r"^filter\.a\.\$in\[1\]: expected a string"),
        ({"a": {"$in": [1, [2]]}}, r"^filter\.a\.\$in\[1\]: expected a string"),
        ({"a": {"$gt": True}}, r"^filter\.a\.\$gt: ordering operators take"),
        ({"a": {"$eq": float("nan")}}, r"^filter\.a\.\$eq: number must be finite"),
        ({"a": {"$eq": float("inf")}}, r"^filter\.a\.\$eq: number must be finite"),
        ({"a": 2**63}, r"^filter\.a: integer out of the 64-bit range"),
        ({"a": "x\ny"}, r"^filter\.a: string contains a control character"),
        ({"a": "x" * 5000}, r"^filter\.a: string longer than"),
        ({"$and": []}, r"^filter\.\$and: list must not be empty"),
        ({"$and": {"a": 1}}, r"^filter\.\$and: expected a list of filter objects, got an object"),
        ({"$or": [{"a": 1}, "b"]}, r"^filter\.\$or\[1\]: expected an object, got str"),
        ({"$or": [{"a": 1}, {}]}, r"^filter\.\$or\[1\]: empty object"),
        ({"$and": [{"a": 1}] * 101}, r"^filter\.\$and: list has more than 100"),
        ({"$and": [{"a": {"$bad": 1}}]}, r"^filter\.\$and\[0\]\.a\.\$bad: unknown operator"),
    ],
)
def test_invalid_filters_name_the_path(spec: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        translate_filter(spec)


def _nested(levels: int) -> dict[str, object]:
    spec: dict[str, object] = {"a": 1}
    for _ in range(levels - 1):
        spec = {"$and": [spec]}
    return spec


def test_depth_limit() -> None:
    assert translate_filter(_nested(MAX_DEPTH)) == 'metadata["a"] == 1'
    with pytest.raises(InvalidArgument, match=f"nested deeper than {MAX_DEPTH} levels"):
        translate_filter(_nested(MAX_DEPTH + 1))


def test_total_comparisons_are_bounded() -> None:
    many = {"$or": [{"a": {"$in": list(range(100))}} for _ in range(11)]}
    with pytest.raises(InvalidArgument, match="more than 1000 comparisons"):
        translate_filter(many)
    assert translate_filter({"$or": [{"a": {"$in": list(range(100))}} for _ in range(10)]})
