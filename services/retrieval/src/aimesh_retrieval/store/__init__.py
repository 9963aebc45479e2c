"""Milvus access: one physical collection per (tenant, collection), chunk rows, search.

Tenants are isolated by storage: every (tenant, collection) pair has its own Milvus
collection whose name is derived from hashes of both parts, so no query ever needs a
tenant filter and no filter mistake can leak another tenant's rows.

- :mod:`.milvus`: ``MilvusStore``, the async API (collections, documents, search).
- :mod:`.model`: names, collection settings, rows and hits.
- :mod:`.collections`: a collection's schema, index parameters and stored settings.
- :mod:`.search`: one function per search kind, the hybrid fusion, hits from results.
- :mod:`.writes`: the filters and row mapping of document writes.
"""

from aimesh_retrieval.store.milvus import MilvusStore
from aimesh_retrieval.store.model import (
    AlreadyExists,
    ChunkRow,
    CollectionMeta,
    CollectionRef,
    FusionDefault,
    FusionKind,
    Hit,
    IndexConfig,
    RowContext,
    SearchMode,
    SearchOptions,
    StoredDocument,
    chunk_id,
    physical_name,
    tenant_prefix,
)
from aimesh_retrieval.store.search import mmr_select

__all__ = [
    "AlreadyExists",
    "ChunkRow",
    "CollectionMeta",
    "CollectionRef",
    "FusionDefault",
    "FusionKind",
    "Hit",
    "IndexConfig",
    "MilvusStore",
    "RowContext",
    "SearchMode",
    "SearchOptions",
    "StoredDocument",
    "chunk_id",
    "mmr_select",
    "physical_name",
    "tenant_prefix",
]
