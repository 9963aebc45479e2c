"""The shared limits: the collection-name rule, and each limit stated in its proto comment."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import pydantic
import pytest

from aimesh_common import limits
from aimesh_common.limits import valid_collection_name

PROTOS = Path(__file__).resolve().parents[2] / "protos" / "aimesh"


@pytest.mark.parametrize("name", ["docs", "a", "A-b_c", "0abc", "x" * 64])
def test_valid_collection_names(name: str) -> None:
    assert valid_collection_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "-docs", "_docs", "x" * 65, "a b", "a.b", "a/b", "caf\u00e9", "docs\n", "\ndocs"],
)
def test_invalid_collection_names(name: str) -> None:
    assert not valid_collection_name(name)


def test_the_pattern_means_the_same_to_pydantic() -> None:
    """The gateway hands the same pattern to pydantic (Rust regex, whose ``$`` is the end
    of the text): both ends accept and refuse the same names."""
    constrained = pydantic.TypeAdapter(
        Annotated[str, pydantic.Field(pattern=limits.COLLECTION_NAME_PATTERN)]
    )
    for name in ("docs", "A-b_c", "x" * 64, "docs\n", "-docs", "x" * 65, "a.b"):
        try:
            constrained.validate_python(name)
        except pydantic.ValidationError:
            accepted = False
        else:
            accepted = True
        assert accepted == valid_collection_name(name), name


def _field_comment(proto: str, message: str, field: str) -> str:
    """The comment lines right above ``field`` in ``message`` of ``proto``."""
    text = (PROTOS / proto).read_text()
    body = re.search(rf"message {message} \{{(.*?)\n\}}", text, re.S)
    assert body is not None, message
    lines = body.group(1).splitlines()
    for index, line in enumerate(lines):
        if re.match(rf"\s*(repeated |optional )?\S+ {field} = \d+;", line):
            comment: list[str] = []
            for above in reversed(lines[:index]):
                if not above.strip().startswith("//"):
                    break
                comment.insert(0, above.strip().removeprefix("//").strip())
            return " ".join(comment)
    raise AssertionError(f"{message}.{field} not found")


def test_each_limit_is_stated_in_its_proto_comment() -> None:
    retrieval = "retrieval/v1/retrieval.proto"
    top_k = _field_comment(retrieval, "SearchRequest", "top_k")
    assert f"1-{limits.MAX_SEARCH_TOP_K} (0 means the default, {limits.DEFAULT_TOP_K}" in top_k
    query = _field_comment(retrieval, "SearchRequest", "query")
    assert f"at most {limits.MAX_QUERY_CHARS}" in query
    collection = _field_comment(retrieval, "UpsertDocumentsRequest", "collection")
    assert limits.COLLECTION_NAME_RULE in collection
    assert "COLLECTION_NAME_PATTERN" in collection
    document_id = _field_comment(retrieval, "Document", "id")
    assert f"1-{limits.MAX_DOCUMENT_ID_CHARS} characters" in document_id
    limit = _field_comment(retrieval, "ListDocumentsRequest", "limit")
    assert f"the default, {limits.DEFAULT_LIST_LIMIT}" in limit
    assert f"at most {limits.MAX_LIST_LIMIT}" in limit
    ask_top_k = _field_comment("llm/v1/llm.proto", "AnswerRequest", "top_k")
    assert f"1-{limits.MAX_ASK_TOP_K} (0 means {limits.DEFAULT_TOP_K})" in ask_top_k
