"""Checks of request fields; each failure is an INVALID_ARGUMENT naming the field.

The limits themselves live in :mod:`aimesh_common.limits` (and in the proto comments);
retrieval owns these fields, so it is the one service that checks them.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import struct_pb2

from aimesh_common.errors import InvalidArgument
from aimesh_common.jsonlimits import check_struct
from aimesh_common.limits import (
    COLLECTION_NAME_RULE,
    MAX_DOCUMENT_ID_CHARS,
    valid_collection_name,
)
from aimesh_common.structs import from_struct
from aimesh_retrieval.store import CollectionRef

MAX_TENANT_ID_CHARS = 128
MAX_METADATA_BYTES = 32 * 1024
"""Largest metadata object, as compact JSON. Milvus caps a JSON field at 64 KiB."""


def _has_control(value: str) -> bool:
    return any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in value)


def shown(value: str, limit: int = 80) -> str:
    """A client value safe to echo in a message: printable and bounded."""
    clean = "".join("?" if _has_control(char) else char for char in value)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def search_filter(message: struct_pb2.Struct, field: str = "filter") -> dict[str, Any]:
    """A metadata filter as a dict, bounded in depth like metadata (the filter's own rules
    are :func:`aimesh_retrieval.filters.translate_filter`'s)."""
    check_struct(message, field)
    return from_struct(message)


def collection_ref(tenant_id: str, collection: str) -> CollectionRef:
    """The validated (tenant, collection) pair of a request."""
    if not tenant_id:
        raise InvalidArgument("tenant_id must not be empty")
    if len(tenant_id) > MAX_TENANT_ID_CHARS:
        raise InvalidArgument(f"tenant_id must be at most {MAX_TENANT_ID_CHARS} characters")
    if not collection:
        raise InvalidArgument("collection must not be empty")
    if not valid_collection_name(collection):
        raise InvalidArgument(
            f"collection '{shown(collection)}' is invalid: use {COLLECTION_NAME_RULE}"
        )
    return CollectionRef(tenant_id=tenant_id, name=collection)


def document_id(value: str, field: str) -> str:
    """A validated document id: 1-256 characters, no control characters."""
    if not value:
        raise InvalidArgument(f"{field} must not be empty")
    if len(value) > MAX_DOCUMENT_ID_CHARS:
        raise InvalidArgument(f"{field} must be at most {MAX_DOCUMENT_ID_CHARS} characters")
    if _has_control(value):
        raise InvalidArgument(f"{field} must not contain control characters")
    return value


def metadata(message: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """Document metadata as a dict, bounded in depth and size."""
    check_struct(message, field)
    result = from_struct(message)
    size = len(json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"{field} is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed"
        )
    return result
