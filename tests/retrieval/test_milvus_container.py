"""Retrieval against a Milvus server started by testcontainers, where a Docker engine runs.

This machine has only the Docker client, so the test skips with that reason; where an
engine answers it upserts and searches through the real service against the container.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from aimesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from aimesh_common.embedding_client import EmbeddingClient
from aimesh_retrieval.config import Settings
from aimesh_retrieval.server import create_server
from aimesh_retrieval.store import MilvusStore


def _docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(
        not _docker_engine_answers(),
        reason="no Docker engine answers here: testcontainers cannot start Milvus",
    ),
]


@pytest.fixture(scope="module")
def milvus_uri() -> Iterator[str]:
    from testcontainers.milvus import MilvusContainer

    with MilvusContainer() as container:
        yield container.get_connection_url()


@pytest.fixture
async def stub(
    milvus_uri: str, embedding_addr: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[retrieval_pb2_grpc.RetrievalServiceAsyncStub]:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        milvus_uri=milvus_uri,
        embedding_service_addr=embedding_addr,
        data_dir=tmp_path_factory.mktemp("container"),
    )
    store = MilvusStore.open(settings)
    embedder = EmbeddingClient.connect(embedding_addr, batch_size=16, timeout=30)
    server = create_server(settings, store, embedder)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield retrieval_pb2_grpc.RetrievalServiceStub(channel)
    await server.stop(0)
    await embedder.close()
    await store.close()


async def test_upsert_and_search_on_a_milvus_container(
    stub: retrieval_pb2_grpc.RetrievalServiceAsyncStub,
) -> None:
    await stub.UpsertDocuments(
        retrieval_pb2.UpsertDocumentsRequest(
            tenant_id="t1",
            collection="kb",
            documents=[
                retrieval_pb2.Document(id="a", text="Milvus is a vector database."),
                retrieval_pb2.Document(id="b", text="Bread is baked from flour and water."),
            ],
        )
    )
    found = await stub.Search(
        retrieval_pb2.SearchRequest(tenant_id="t1", collection="kb", query="vector store")
    )
    assert found.chunks[0].document_id == "a"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Search(
            retrieval_pb2.SearchRequest(tenant_id="t2", collection="kb", query="vector store")
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
