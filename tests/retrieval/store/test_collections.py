"""A collection's layout: schema, index parameters, settings kept in its properties and
read back, and the server versions with full-text search (checked without Milvus)."""

from __future__ import annotations

import json
from typing import Any

from aimesh_retrieval.chunking import ChunkingConfig
from aimesh_retrieval.store.collections import (
    SETTINGS_PROPERTY,
    collection_schema,
    has_full_text,
    index_params,
    meta_from,
    settings_of,
)
from aimesh_retrieval.store.model import CollectionMeta, IndexConfig


def test_full_text_needs_milvus_2_5() -> None:
    assert has_full_text("v2.5.0")
    assert has_full_text("2.6.1")
    assert has_full_text("v3.0")
    assert not has_full_text("v2.3.5-lite")
    assert not has_full_text("v2.4.9")
    assert not has_full_text("unknown")


def test_schema_and_indexes_with_and_without_full_text() -> None:
    hnsw = CollectionMeta("docs", 8, None, IndexConfig("HNSW", 24, 300), full_text=True)
    schema = collection_schema(hnsw)
    fields = {field.name: field for field in schema.fields}
    assert list(fields) == [
        "id",
        "document_id",
        "chunk_index",
        "chunk_count",
        "text",
        "content_hash",
        "metadata",
        "embedding",
        "sparse",
    ]
    assert fields["id"].is_primary
    assert fields["embedding"].params["dim"] == 8
    assert [function.name for function in schema.functions] == ["text_bm25"]
    indexes = {index.field_name: index for index in index_params(hnsw)}
    assert indexes["embedding"].index_type == "HNSW"
    assert indexes["embedding"].get_index_configs()["M"] == 24
    assert indexes["embedding"].get_index_configs()["efConstruction"] == 300
    assert indexes["embedding"].get_index_configs()["metric_type"] == "COSINE"
    assert indexes["sparse"].index_type == "SPARSE_INVERTED_INDEX"

    flat = CollectionMeta("docs", 8, None, IndexConfig("FLAT"), full_text=False)
    assert "sparse" not in {field.name for field in collection_schema(flat).fields}
    assert not collection_schema(flat).functions
    indexes = {index.field_name: index for index in index_params(flat)}
    assert list(indexes) == ["embedding"]
    assert indexes["embedding"].index_type == "FLAT"


def description(meta: CollectionMeta, tenant: str) -> dict[str, Any]:
    fields: list[dict[str, Any]] = [
        {"name": "id"},
        {"name": "embedding", "params": {"dim": meta.dimension}},
    ]
    if meta.full_text:
        fields.append({"name": "sparse"})
    return {"fields": fields, "properties": {SETTINGS_PROPERTY: meta.describe(tenant)}}


def test_settings_round_trip_through_the_properties() -> None:
    meta = CollectionMeta("Docs", 8, ChunkingConfig(), IndexConfig("HNSW", 32, 100), full_text=True)
    described = description(meta, "tenant-a")
    assert settings_of(described)["tenant"] == "tenant-a"  # type: ignore[index]
    assert meta_from("Docs", described) == meta


def test_collections_without_settings_get_the_legacy_defaults() -> None:
    legacy = {"fields": [{"name": "embedding", "params": {"dim": 4}}]}
    assert settings_of(legacy) is None
    assert settings_of({"properties": {SETTINGS_PROPERTY: "not json"}}) is None
    newer = {"properties": {SETTINGS_PROPERTY: json.dumps({"aimesh": 99})}}
    assert settings_of(newer) is None
    assert meta_from("old", legacy) == CollectionMeta("old", 4, None, IndexConfig(), False)
