"""Retrieval servers for the tests: real gRPC, real Milvus Lite, the real embedding server.

One Milvus Lite file and one retrieval server serve the whole session; tests keep apart
by using fresh collection names. A second server shares the same store but points at an
embedding address where nothing listens, to show what happens when embedding is down.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from aimesh.retrieval.v1 import retrieval_pb2_grpc
from aimesh_retrieval.config import Settings
from aimesh_retrieval.embedder import EmbeddingClient
from aimesh_retrieval.server import create_server
from aimesh_retrieval.store import MilvusStore
from tests.conftest import free_port

# Small chunks so that a paragraph-sized test document spans several of them.
CHUNK_SIZE = 200
CHUNK_OVERLAP = 40


@dataclass
class Retrieval:
    """A running retrieval server, a client stub for it, and its store (for inspection)."""

    stub: retrieval_pb2_grpc.RetrievalServiceAsyncStub
    store: MilvusStore
    settings: Settings
    channel: grpc.aio.Channel


def new_collection() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
async def retrieval_store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MilvusStore]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("retrieval"))
    store = MilvusStore.open(settings)
    yield store
    await store.close()


async def serve(store: MilvusStore, embedding_addr: str) -> AsyncIterator[Retrieval]:
    """Run a retrieval server on ``store`` until the caller's generator is closed."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        embedding_service_addr=embedding_addr,
        chunk_size=CHUNK_SIZE,
        chunk_overlap=CHUNK_OVERLAP,
        embed_timeout_seconds=30,
        # Several Embed calls per multi-chunk document: exercises batching and ordering.
        embed_batch_size=4,
    )
    embedder = EmbeddingClient(
        settings.embedding_service_addr,
        batch_size=settings.embed_batch_size,
        concurrency=settings.embed_concurrency,
        timeout=settings.embed_timeout_seconds,
    )
    server = create_server(settings, store, embedder)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    yield Retrieval(stub=stub, store=store, settings=settings, channel=channel)
    await channel.close()
    await server.stop(0)
    await embedder.close()


@pytest.fixture(scope="session")
async def retrieval(retrieval_store: MilvusStore, embedding_addr: str) -> AsyncIterator[Retrieval]:
    """The retrieval server backed by the real embedding server."""
    async for running in serve(retrieval_store, embedding_addr):
        yield running


@pytest.fixture(scope="session")
async def retrieval_no_embedding(retrieval_store: MilvusStore) -> AsyncIterator[Retrieval]:
    """The same store, but the embedding address has no server behind it."""
    async for running in serve(retrieval_store, f"127.0.0.1:{free_port()}"):
        yield running
