"""Fixtures of the embedding tests: a client of the session's in-process server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from aimesh.embedding.v1 import embedding_pb2_grpc


@pytest.fixture(scope="session")
async def embedding_channel(embedding_addr: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(embedding_addr) as channel:
        yield channel


@pytest.fixture(scope="session")
def embedding_stub(
    embedding_channel: grpc.aio.Channel,
) -> embedding_pb2_grpc.EmbeddingServiceAsyncStub:
    return embedding_pb2_grpc.EmbeddingServiceStub(embedding_channel)
