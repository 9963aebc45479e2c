"""Retrieval servers for the tests: real gRPC, real Milvus, the real embedding server.

The store fixture is parametrized over two real backends: Milvus Lite (a file) and a real
standalone Milvus 2.3.5 server (``milvus-server`` from PyPI ``milvus==2.3.5``, HNSW
index, no BM25), started once per session on free ports and always stopped. Tests on the
server are marked ``slow``; they skip when ``milvus-server`` is not installed.

One store and one retrieval server per backend serve the whole session; tests keep apart
by using fresh collection names. A second server shares the same store but points at an
embedding address where nothing listens, to show what happens when embedding is down.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

from aimesh.retrieval.v1 import retrieval_pb2_grpc
from aimesh_common.embedding_client import EmbeddingClient
from aimesh_retrieval.config import Settings
from aimesh_retrieval.jobs import JobStore
from aimesh_retrieval.server import create_server
from aimesh_retrieval.store import MilvusStore
from scripts.milvus_server import (
    MilvusServer,
    MilvusServerFailed,
    MilvusServerMissing,
)
from scripts.milvus_server import run_milvus_server as shared_run_milvus_server
from tests.conftest import free_port

# Small chunks (in tokens) so that a paragraph-sized test document spans several of them.
CHUNK_SIZE = 48
CHUNK_OVERLAP = 10


@dataclass
class Retrieval:
    """A running retrieval server, a client stub for it, and its store (for inspection)."""

    stub: retrieval_pb2_grpc.RetrievalServiceAsyncStub
    store: MilvusStore
    settings: Settings
    channel: grpc.aio.Channel
    address: str


def new_collection() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


# The server's time tick bounds each Strong-consistency read (the servicer's content-hash
# check, settle after every write): 50 ms instead of Milvus' 200 ms saves about 0.15 s on
# each of them, which the many writes of the [server] tests add up to.
TIME_TICK_MS = 50


@contextlib.contextmanager
def run_milvus_server(data: Path, timeout: float = 120) -> Iterator[MilvusServer]:
    """The shared launcher; a missing binary skips, a failed start fails the test."""
    try:
        with shared_run_milvus_server(data, timeout, time_tick_ms=TIME_TICK_MS) as server:
            yield server
    except MilvusServerMissing as missing:
        pytest.skip(str(missing))
    except MilvusServerFailed as failed:
        pytest.fail(f"milvus-server did not start: {failed}")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """One real Milvus 2.3.5 standalone server for the session."""
    with run_milvus_server(tmp_path_factory.mktemp("milvus-server")) as server:
        yield server


BACKENDS = ["lite", pytest.param("server", marks=pytest.mark.slow)]


@pytest.fixture(scope="session", params=BACKENDS)
async def retrieval_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MilvusStore]:
    """A store on Milvus Lite, then (slow) on the real Milvus server."""
    if request.param == "server":
        server: MilvusServer = request.getfixturevalue("milvus_server")
        settings = Settings(milvus_uri=server.uri, milvus_timeout_seconds=20)
    else:
        settings = Settings(data_dir=tmp_path_factory.mktemp("retrieval"))
    store = MilvusStore.open(settings)
    yield store
    await store.close()


async def serve(
    store: MilvusStore,
    embedding_addr: str,
    jobs: JobStore | None = None,
    tracer_provider: TracerProvider | None = None,
) -> AsyncIterator[Retrieval]:
    """Run a retrieval server on ``store`` until the caller's generator is closed (tracing
    its RPCs and embedding calls with ``tracer_provider``)."""
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
    embedder = EmbeddingClient.connect(
        settings.embedding_service_addr,
        batch_size=settings.embed_batch_size,
        concurrency=settings.embed_concurrency,
        timeout=settings.embed_timeout_seconds,
        tracer_provider=tracer_provider,
    )
    server = create_server(settings, store, embedder, jobs, tracer_provider)
    await server.start()
    address = f"127.0.0.1:{server.port}"
    channel = grpc.aio.insecure_channel(address)
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    yield Retrieval(stub=stub, store=store, settings=settings, channel=channel, address=address)
    await channel.close()
    await server.stop(0)
    await embedder.close()


@pytest.fixture(scope="session")
async def retrieval(
    retrieval_store: MilvusStore, embedding_addr: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Retrieval]:
    """The retrieval server backed by the real embedding server, with a SQLite job store."""
    jobs_dir = tmp_path_factory.mktemp("jobs")
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{jobs_dir / 'jobs.db'}")
    async for running in serve(retrieval_store, embedding_addr, jobs):
        yield running
    await jobs.close()


@pytest.fixture(scope="session")
async def retrieval_no_embedding(retrieval_store: MilvusStore) -> AsyncIterator[Retrieval]:
    """The same store, but the embedding address has no server behind it."""
    async for running in serve(retrieval_store, f"127.0.0.1:{free_port()}"):
        yield running
