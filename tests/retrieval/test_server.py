"""The server factory's request ids: a retrieval server (real gRPC, the session's Milvus
store) passes each caller's ``x-request-id`` on to a real downstream embedding server and
logs with it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aimesh.retrieval.v1 import retrieval_pb2 as pb
from aimesh_common.request_id import REQUEST_ID_METADATA
from aimesh_retrieval.store import MilvusStore
from tests.common.fakes import RecordingEmbedding, captured_records, recording_embedding
from tests.retrieval.conftest import Retrieval, new_collection, serve

TENANT = "tenant-rid"


@pytest.fixture
async def recorded(
    retrieval_store: MilvusStore,
) -> AsyncIterator[tuple[Retrieval, RecordingEmbedding]]:
    """A retrieval server whose embedding server records the request id of each call."""
    async with recording_embedding() as (embedding, addr):
        async for running in serve(retrieval_store, addr):
            yield running, embedding


def _id(value: str) -> tuple[tuple[str, str]]:
    return ((REQUEST_ID_METADATA, value),)


async def test_request_ids_reach_the_embedding_service(
    recorded: tuple[Retrieval, RecordingEmbedding],
) -> None:
    retrieval, embedding = recorded
    collection = new_collection()
    with captured_records("aimesh.retrieval") as records:
        await retrieval.stub.CreateCollection(
            pb.CreateCollectionRequest(tenant_id=TENANT, collection=collection),
            metadata=_id("create-1"),
        )
    # The servicer's line and the store's (a child logger) carry the caller's id.
    created = [r for r in records if r.getMessage() == "created collection"]
    assert sorted((r.name, r.__dict__.get("request_id")) for r in created) == [
        ("aimesh.retrieval", "create-1"),
        ("aimesh.retrieval.store", "create-1"),
    ]

    await retrieval.stub.UpsertDocuments(
        pb.UpsertDocumentsRequest(
            tenant_id=TENANT,
            collection=collection,
            documents=[pb.Document(id="d1", text="Paris is the capital of France.")],
        ),
        metadata=_id("ingest-2"),
    )
    await retrieval.stub.Search(
        pb.SearchRequest(tenant_id=TENANT, collection=collection, query="capital"),
        metadata=_id("search-3"),
    )
    # Without an id none is made up (and the previous call's does not linger).
    await retrieval.stub.Search(
        pb.SearchRequest(tenant_id=TENANT, collection=collection, query="France")
    )

    # Info is asked once (then cached), by the first call.
    assert [(s.method, s.sent, s.held) for s in embedding.seen] == [
        ("Info", ("create-1",), "create-1"),
        ("Embed", ("ingest-2",), "ingest-2"),
        ("Embed", ("search-3",), "search-3"),
        ("Embed", (), None),
    ]
