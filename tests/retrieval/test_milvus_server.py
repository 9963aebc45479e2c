"""The retrieval service on a real Milvus server (HNSW index) instead of Milvus Lite.

Needs the ``milvus-server`` command (PyPI ``milvus==2.3.5``: a real standalone Milvus);
skipped when it is not installed. The server takes 10-45 s to start, hence ``slow``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from pymilvus import MilvusClient

from aimesh.retrieval.v1 import retrieval_pb2 as pb
from aimesh_retrieval.config import Settings
from aimesh_retrieval.store import CollectionRef, MilvusStore
from scripts.milvus_server import MilvusServer
from tests.retrieval.conftest import (
    Retrieval,
    new_collection,
    run_milvus_server,
    serve,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def doomed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """A second server of its own, for the test that kills it."""
    with run_milvus_server(tmp_path_factory.mktemp("milvus-doomed")) as server:
        yield server


@pytest.fixture(scope="module")
async def on_server(milvus_server: MilvusServer, embedding_addr: str) -> AsyncIterator[Retrieval]:
    store = MilvusStore.open(Settings(milvus_uri=milvus_server.uri, milvus_timeout_seconds=10))
    async for running in serve(store, embedding_addr):
        yield running
    await store.close()


async def test_round_trip_on_a_milvus_server(
    on_server: Retrieval, milvus_server: MilvusServer
) -> None:
    stub = on_server.stub
    collection = new_collection()
    ref = CollectionRef("tenant-a", collection)
    text = " ".join(f"Sentence {i} about the tide and the harbour." for i in range(30))
    first = await stub.UpsertDocuments(
        pb.UpsertDocumentsRequest(
            tenant_id="tenant-a",
            collection=collection,
            documents=[
                pb.Document(id="tide", text=text),
                pb.Document(id="bread", text="Sourdough bread rises slowly overnight."),
            ],
        )
    )
    chunks = first.results[0].chunks
    assert chunks > 3
    # The upsert settled its writes: they are visible to the very next read.
    reply = await stub.Search(
        pb.SearchRequest(tenant_id="tenant-a", collection=collection, query="baking bread")
    )
    assert reply.chunks[0].document_id == "bread"

    replaced = await stub.UpsertDocuments(
        pb.UpsertDocumentsRequest(
            tenant_id="tenant-a",
            collection=collection,
            documents=[pb.Document(id="tide", text="Low tide at noon.")],
        )
    )
    assert replaced.results[0].replaced
    assert await on_server.store.count_chunks(ref, "tide") == 1

    client = MilvusClient(uri=milvus_server.uri, timeout=10)
    index = client.describe_index(ref.physical, "embedding")
    assert index["index_type"] == "HNSW"
    assert index["metric_type"] == "COSINE"
    client.close()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListDocuments(
            pb.ListDocumentsRequest(tenant_id="tenant-b", collection=collection)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
async def second_replica(
    milvus_server: MilvusServer, embedding_addr: str
) -> AsyncIterator[Retrieval]:
    """Another retrieval process's view: its own Milvus client, so its own session."""
    store = MilvusStore.open(Settings(milvus_uri=milvus_server.uri, milvus_timeout_seconds=10))
    async for running in serve(store, embedding_addr):
        yield running
    await store.close()


async def test_writes_through_one_replica_are_searchable_from_another(
    on_server: Retrieval, second_replica: Retrieval
) -> None:
    """Searches run at Session consistency; an upsert or delete returns only once its
    writes are visible to every replica, so the other one never misses or resurrects one."""
    collection = new_collection()
    topics = ["tides", "bread", "violins", "glaciers", "beekeeping"]
    for round_, topic in enumerate(topics):
        await on_server.stub.UpsertDocuments(
            pb.UpsertDocumentsRequest(
                tenant_id="tenant-a",
                collection=collection,
                documents=[pb.Document(id="doc", text=f"Round {round_}: all about {topic}.")],
            )
        )
        reply = await second_replica.stub.Search(
            pb.SearchRequest(tenant_id="tenant-a", collection=collection, query=topic, top_k=5)
        )
        assert [chunk.text for chunk in reply.chunks] == [f"Round {round_}: all about {topic}."]
    await on_server.stub.DeleteDocument(
        pb.DeleteDocumentRequest(tenant_id="tenant-a", collection=collection, document_id="doc")
    )
    reply = await second_replica.stub.Search(
        pb.SearchRequest(tenant_id="tenant-a", collection=collection, query="beekeeping")
    )
    assert list(reply.chunks) == []


@pytest.fixture(scope="module")
async def on_doomed(doomed_server: MilvusServer, embedding_addr: str) -> AsyncIterator[Retrieval]:
    store = MilvusStore.open(Settings(milvus_uri=doomed_server.uri, milvus_timeout_seconds=10))
    async for running in serve(store, embedding_addr):
        yield running
    await store.close()


async def test_milvus_down_is_unavailable(
    on_doomed: Retrieval, doomed_server: MilvusServer
) -> None:
    on_server = on_doomed
    milvus_server = doomed_server
    collection = new_collection()
    await on_server.stub.UpsertDocuments(
        pb.UpsertDocumentsRequest(
            tenant_id="tenant-a",
            collection=collection,
            documents=[pb.Document(id="d", text="Owls hunt at night.")],
        )
    )
    # Stop the server for good (it is the last test of the module).
    os.killpg(milvus_server.process.pid, signal.SIGKILL)
    await asyncio.to_thread(milvus_server.process.wait, 15)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await on_server.stub.Search(
            pb.SearchRequest(tenant_id="tenant-a", collection=collection, query="owls")
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "vector store unavailable"
    assert time.monotonic() - started < on_server.settings.milvus_timeout_seconds + 5
