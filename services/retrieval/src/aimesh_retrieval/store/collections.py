"""How a collection is laid out in Milvus: its schema, its index parameters, the settings
kept in its properties, and reading them back from ``describe_collection``.

Each collection's settings (owner, caller-facing name, chunking, index, full text) are kept
as JSON in a property of the Milvus collection (``aimesh.settings``; Milvus Lite drops
schema descriptions), so they live and die with the data and every replica reads the same.
Full-text (BM25) search needs Milvus Lite or a Milvus server >= 2.5: there the text field
gets an analyzer and a BM25 function fills a sparse vector field.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from pymilvus import CollectionSchema, DataType, Function, FunctionType, MilvusClient
from pymilvus.milvus_client import IndexParams

from aimesh_retrieval.chunking import ChunkingConfig
from aimesh_retrieval.store.model import (
    SETTINGS_VERSION,
    CollectionMeta,
    FusionDefault,
    IndexConfig,
)

# VARCHAR lengths: Milvus Lite counts characters, a Milvus server may count UTF-8 bytes;
# these fit a 256-character id of four-byte characters either way.
MAX_DOCUMENT_ID_BYTES = 1024
MAX_CHUNK_ID_BYTES = MAX_DOCUMENT_ID_BYTES + 24
MAX_TEXT_BYTES = 65_535
# Title and section path of a chunk (at most 1,000 characters of up to four bytes).
MAX_CONTEXT_BYTES = 4_096
SETTINGS_PROPERTY = "aimesh.settings"
# A random mark set by the create that made the collection (see MilvusStore._create).
CREATION_PROPERTY = "aimesh.creation"
# The first server version with BM25 full-text search.
FULL_TEXT_SINCE = (2, 5)
_VERSION = re.compile(r"v?(\d+)\.(\d+)")


def has_full_text(server_version: str) -> bool:
    """Whether a Milvus server of ``server_version`` has BM25 full-text search."""
    found = _VERSION.match(server_version)
    return found is not None and (int(found.group(1)), int(found.group(2))) >= FULL_TEXT_SINCE


def collection_schema(meta: CollectionMeta) -> CollectionSchema:
    """The chunk rows: id, document, position, text, hash, metadata, with chunk context
    the title and section path, the dense vector, and with full text a BM25 function
    filling a sparse vector from the analyzed text."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_CHUNK_ID_BYTES)
    schema.add_field("document_id", DataType.VARCHAR, max_length=MAX_DOCUMENT_ID_BYTES)
    schema.add_field("chunk_index", DataType.INT64)
    schema.add_field("chunk_count", DataType.INT64)
    text_options: dict[str, Any] = {"enable_analyzer": True} if meta.full_text else {}
    schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES, **text_options)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
    schema.add_field("metadata", DataType.JSON)
    if meta.context:
        # ``text`` holds "title > section\n\n" before the chunk's own text from body_start.
        schema.add_field("body_start", DataType.INT64)
        schema.add_field("title", DataType.VARCHAR, max_length=MAX_CONTEXT_BYTES)
        schema.add_field("section", DataType.VARCHAR, max_length=MAX_CONTEXT_BYTES)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=meta.dimension)
    if meta.full_text:
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
    return schema


def index_params(meta: CollectionMeta) -> IndexParams:
    """The dense index (FLAT or HNSW, cosine) and, with full text, the BM25 sparse index."""
    params = MilvusClient.prepare_index_params()
    index = meta.index
    if index.index_type == "HNSW":
        params.add_index(
            field_name="embedding",
            index_type="HNSW",
            metric_type="COSINE",
            params={"M": index.hnsw_m, "efConstruction": index.hnsw_ef_construction},
        )
    else:
        params.add_index(field_name="embedding", index_type="FLAT", metric_type="COSINE")
    if meta.full_text:
        params.add_index(
            field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25"
        )
    return params


def settings_of(description: Mapping[str, Any]) -> dict[str, Any] | None:
    """The aimesh settings kept in a collection's properties (None when absent or old)."""
    try:
        settings = json.loads((description.get("properties") or {}).get(SETTINGS_PROPERTY, ""))
    except ValueError:
        return None
    if not isinstance(settings, dict) or settings.get("aimesh") != SETTINGS_VERSION:
        return None
    return settings


def meta_from(name: str, description: Mapping[str, Any]) -> CollectionMeta:
    """Metadata from ``describe_collection``; older collections get the legacy defaults."""
    dim = vector_dimension(description)
    fields = {f.get("name") for f in description.get("fields", [])}
    settings = settings_of(description) or {}
    chunking = settings.get("chunking")
    index = settings.get("index")
    # Only the keys this version knows: settings written by a newer one still load.
    known = {f.name for f in dataclasses.fields(ChunkingConfig)}
    config = (
        ChunkingConfig(**{k: v for k, v in chunking.items() if k in known})
        if isinstance(chunking, dict)
        else None
    )
    if config is not None:
        # Chunk context exactly when the schema has its fields (older collections lack them).
        config = dataclasses.replace(config, context="body_start" in fields)
    return CollectionMeta(
        name=name,
        dimension=dim,
        fusion=_fusion(settings.get("fusion")),
        chunking=config,
        index=IndexConfig(**index) if isinstance(index, dict) else IndexConfig(),
        full_text="sparse" in fields,
        rerank=settings.get("rerank") is True,
    )


def _fusion(value: object) -> FusionDefault | None:
    """A stored fusion default; None when absent or not one this version knows."""
    if not isinstance(value, dict) or value.get("fusion") not in ("adaptive", "rrf", "weighted"):
        return None
    weight = value.get("dense_weight")
    return FusionDefault(
        value["fusion"], float(weight) if isinstance(weight, int | float) else None
    )


def vector_dimension(description: Mapping[str, Any]) -> int:
    for field in description.get("fields", []):
        if field.get("name") == "embedding":
            return int(field.get("params", {}).get("dim", 0))
    raise RuntimeError("collection has no embedding field")
