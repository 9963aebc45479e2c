"""Checks of request fields; each failure is an INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf import json_format, struct_pb2

from aimesh_common.errors import InvalidArgument
from aimesh_retrieval.filters import normalize_number
from aimesh_retrieval.store import CollectionRef

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_TENANT_ID_CHARS = 128
MAX_DOCUMENT_ID_CHARS = 256
MAX_METADATA_BYTES = 32 * 1024
"""Largest metadata object, as compact JSON. Milvus caps a JSON field at 64 KiB."""


def _has_control(value: str) -> bool:
    return any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in value)


def shown(value: str, limit: int = 80) -> str:
    """A client value safe to echo in a message: printable and bounded."""
    clean = "".join("?" if _has_control(char) else char for char in value)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def collection_ref(tenant_id: str, collection: str) -> CollectionRef:
    """The validated (tenant, collection) pair of a request."""
    if not tenant_id:
        raise InvalidArgument("tenant_id must not be empty")
    if len(tenant_id) > MAX_TENANT_ID_CHARS:
        raise InvalidArgument(f"tenant_id must be at most {MAX_TENANT_ID_CHARS} characters")
    if not collection:
        raise InvalidArgument("collection must not be empty")
    if not COLLECTION_NAME.match(collection):
        raise InvalidArgument(
            f"collection '{shown(collection)}' is invalid: use 1-64 characters of "
            "[A-Za-z0-9_-], starting with a letter or digit"
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


def normalize_json(value: Any) -> Any:
    """Struct numbers are doubles: store ``2`` as ``2``, not ``2.0``, so filters match."""
    if isinstance(value, dict):
        return {key: normalize_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalize_json(item) for item in value]
    if isinstance(value, float):
        return normalize_number(value)
    return value


def struct_to_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON values, integral numbers as ints."""
    result = normalize_json(json_format.MessageToDict(message))
    return result if isinstance(result, dict) else {}


def metadata(message: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """Document metadata as a dict, bounded in size."""
    result = struct_to_dict(message)
    size = len(json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"{field} is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed"
        )
    return result


def dict_to_struct(value: Any) -> struct_pb2.Struct:
    """A stored metadata object as a Struct (anything else becomes an empty Struct)."""
    message = struct_pb2.Struct()
    if isinstance(value, dict):
        message.update(value)
    return message
