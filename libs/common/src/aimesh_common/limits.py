"""The limits of aimesh's request fields, each written once.

Every constant here is also stated in the comment of the proto field it bounds
(``protos/aimesh/*/v1/*.proto``), and checked by the one service that owns that field;
the hops in front forward the value as they got it (the owner's INVALID_ARGUMENT names
the field).
"""

from __future__ import annotations

import re

DEFAULT_TOP_K = 5
"""``top_k`` of a search or an ask when the request leaves it 0."""
MAX_SEARCH_TOP_K = 100
"""Most chunks one ``retrieval.v1.SearchRequest`` returns; checked by retrieval."""
MAX_ASK_TOP_K = 50
"""Most chunks one ``llm.v1.AnswerRequest`` retrieves as sources; checked by the router."""
MAX_QUERY_CHARS = 8192
"""Longest ``retrieval.v1.SearchRequest.query`` (so the longest question); checked by retrieval."""

COLLECTION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""A collection name; the pattern also serves JSON Schema (pydantic's ``pattern=``)."""
COLLECTION_NAME_RULE = "1-64 characters of [A-Za-z0-9_-], starting with a letter or digit"
""":data:`COLLECTION_NAME_PATTERN` in words, for error messages and API docs."""
MAX_DOCUMENT_ID_CHARS = 256
"""Longest document id; checked by retrieval."""
DEFAULT_LIST_LIMIT = 100
"""Documents one ``ListDocumentsRequest`` returns when its ``limit`` is 0."""
MAX_LIST_LIMIT = 1000
"""Most documents one ``ListDocumentsRequest`` returns; checked by retrieval."""

_COLLECTION_NAME = re.compile(COLLECTION_NAME_PATTERN)


def valid_collection_name(name: str) -> bool:
    """True when ``name`` follows :data:`COLLECTION_NAME_RULE`.

    ``fullmatch``: with ``match`` the pattern's ``$`` would accept a trailing newline.
    """
    return _COLLECTION_NAME.fullmatch(name) is not None
