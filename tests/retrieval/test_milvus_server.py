"""The retrieval service on a real Milvus server (HNSW index) instead of Milvus Lite.

Needs the ``milvus-server`` command (PyPI ``milvus==2.3.5``: a real standalone Milvus);
skipped when it is not installed. The server takes 10-45 s to start, hence ``slow``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
from pymilvus import MilvusClient

from aimesh.retrieval.v1 import retrieval_pb2 as pb
from aimesh_retrieval.config import Settings
from aimesh_retrieval.store import CollectionRef, MilvusStore
from tests.conftest import free_port
from tests.retrieval.conftest import Retrieval, new_collection, serve

pytestmark = pytest.mark.slow


@dataclass
class MilvusServer:
    uri: str
    process: subprocess.Popen[bytes]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """milvus-server ignores SIGTERM for a while: TERM the group, then KILL it."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    command = shutil.which("milvus-server")
    if command is None:
        pytest.skip("milvus-server is not installed (pip install milvus==2.3.5)")
    data = tmp_path_factory.mktemp("milvus-server")
    port = free_port()
    process = subprocess.Popen(
        [command, "--data", str(data), "--proxy-port", str(port), "--etcd-port", str(free_port())],
        stdout=(data / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (data / "server.log").read_text()[-2000:]
            try:
                MilvusClient(uri=uri, timeout=3).list_collections()
                break
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail("milvus-server did not become ready within 120 s")
                time.sleep(2)
        yield MilvusServer(uri, process)
    finally:
        _stop(process)


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
    # Strong consistency: the writes are visible to the very next read.
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


async def test_milvus_down_is_unavailable(
    on_server: Retrieval, milvus_server: MilvusServer
) -> None:
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
