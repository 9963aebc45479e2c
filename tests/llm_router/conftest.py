"""Fixtures of the LLM router tests: a scripted OpenAI-compatible HTTP server, a small
real gRPC RetrievalService with fixed chunks, and router servers built with create_server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc
from aimesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from aimesh_common.server import GrpcServer, build_grpc_server
from aimesh_llm_router.config import Settings
from aimesh_llm_router.modelconfig import ModelsConfig, validate_models_config
from aimesh_llm_router.providers import PROVIDERS
from aimesh_llm_router.server import build_dependencies, create_server
from tests.llm_router.openai_server import FakeOpenAI

TEST_KEY = "sk-test-4f9a2c1e-secret"


@dataclass
class FixedRetrieval(retrieval_pb2_grpc.RetrievalServiceServicer):
    """A real RetrievalService answering Search from fixed chunks per (tenant, collection)."""

    collections: dict[tuple[str, str], list[retrieval_pb2.ScoredChunk]] = field(
        default_factory=dict
    )
    searches: list[retrieval_pb2.SearchRequest] = field(default_factory=list)

    def put(self, tenant: str, collection: str, texts: list[tuple[str, str]]) -> None:
        """Store (document_id, text) chunks, best first."""
        chunks = []
        for rank, (document_id, text) in enumerate(texts):
            metadata = struct_pb2.Struct()
            metadata.update({"rank": rank, "doc": document_id})
            chunks.append(
                retrieval_pb2.ScoredChunk(
                    document_id=document_id,
                    chunk_id=f"{document_id}#0",
                    chunk_index=0,
                    text=text,
                    score=round(0.9 - 0.1 * rank, 2),
                    metadata=metadata,
                )
            )
        self.collections[(tenant, collection)] = chunks

    async def Search(
        self, request: retrieval_pb2.SearchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> retrieval_pb2.SearchResponse:
        self.searches.append(request)
        if request.collection == "broken":
            await context.abort(grpc.StatusCode.INTERNAL, "disk on fire")
        if request.filter.fields and "bad" in json_format.MessageToDict(request.filter):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "filter: unknown operator $bad")
        if request.rerank:
            # As the real service without a reranker configured.
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "rerank was requested but this retrieval service has no reranker configured",
            )
        chunks = self.collections.get((request.tenant_id, request.collection))
        if chunks is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"collection {request.collection!r} does not exist"
            )
        return retrieval_pb2.SearchResponse(chunks=(chunks or [])[: request.top_k or 5])

    async def _unused(self, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the router only calls Search")

    async def UpsertDocuments(
        self, request: retrieval_pb2.UpsertDocumentsRequest, context: Any
    ) -> retrieval_pb2.UpsertDocumentsResponse:
        return await self._unused(context)  # type: ignore[no-any-return]

    async def DeleteDocument(
        self, request: retrieval_pb2.DeleteDocumentRequest, context: Any
    ) -> retrieval_pb2.DeleteDocumentResponse:
        return await self._unused(context)  # type: ignore[no-any-return]

    async def ListDocuments(
        self, request: retrieval_pb2.ListDocumentsRequest, context: Any
    ) -> retrieval_pb2.ListDocumentsResponse:
        return await self._unused(context)  # type: ignore[no-any-return]

    async def CreateCollection(
        self, request: retrieval_pb2.CreateCollectionRequest, context: Any
    ) -> retrieval_pb2.CollectionInfo:
        return await self._unused(context)  # type: ignore[no-any-return]

    async def ListCollections(
        self, request: retrieval_pb2.ListCollectionsRequest, context: Any
    ) -> retrieval_pb2.ListCollectionsResponse:
        return await self._unused(context)  # type: ignore[no-any-return]

    async def DeleteCollection(
        self, request: retrieval_pb2.DeleteCollectionRequest, context: Any
    ) -> retrieval_pb2.DeleteCollectionResponse:
        return await self._unused(context)  # type: ignore[no-any-return]

    async def UpdateCollectionSettings(
        self, request: retrieval_pb2.UpdateCollectionSettingsRequest, context: Any
    ) -> retrieval_pb2.CollectionInfo:
        return await self._unused(context)  # type: ignore[no-any-return]

    async def SubmitIngestJob(self, request_iterator: Any, context: Any) -> Any:
        return await self._unused(context)

    async def GetIngestJob(self, request: Any, context: Any) -> Any:
        return await self._unused(context)


@pytest.fixture(scope="session", autouse=True)
def router_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Conversation stores of routers built in these tests live in a temporary directory."""
    directory = tmp_path_factory.mktemp("router-data")
    previous = os.environ.get("AIMESH_DATA_DIR")
    os.environ["AIMESH_DATA_DIR"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("AIMESH_DATA_DIR", None)
    else:
        os.environ["AIMESH_DATA_DIR"] = previous


@pytest.fixture(scope="session")
async def fake_openai_server() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def fake_openai(fake_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The session's scripted server, emptied before and after each test."""
    fake_openai_server.reset()
    yield fake_openai_server
    fake_openai_server.reset()


@pytest.fixture(scope="session")
async def backup_openai_server() -> AsyncIterator[FakeOpenAI]:
    """A second upstream, for fallback tests."""
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def backup_openai(backup_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    backup_openai_server.reset()
    yield backup_openai_server
    backup_openai_server.reset()


@pytest.fixture(scope="session")
async def retrieval_server() -> AsyncIterator[tuple[FixedRetrieval, str]]:
    servicer = FixedRetrieval()
    server = build_grpc_server(
        host="127.0.0.1",
        port=0,
        register=lambda s: retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, s),
        service_names=["aimesh.retrieval.v1.RetrievalService"],
    )
    await server.start()
    yield servicer, f"127.0.0.1:{server.port}"
    await server.stop(0)


@pytest.fixture
def retrieval(retrieval_server: tuple[FixedRetrieval, str]) -> FixedRetrieval:
    servicer, _ = retrieval_server
    servicer.collections.clear()
    servicer.searches.clear()
    return servicer


def openai_settings(base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "port": 0,
        "host": "127.0.0.1",
        "metrics_port": None,
        "llm_provider": "openai",
        "openai_base_url": base_url,
        "openai_api_key": TEST_KEY,
        "openai_model": "test-model",
        "openai_max_retries": 0,
        "request_timeout_seconds": 5,
        **overrides,
    }
    return Settings(**values)


def models_config(models: dict[str, Any], **extra: Any) -> ModelsConfig:
    """A validated model configuration; ``TEST_KEY_VAR`` in api_key_env resolves to TEST_KEY."""
    return validate_models_config(
        {"models": models, **extra},
        "test",
        frozenset(PROVIDERS),
        environ={"TEST_KEY_VAR": TEST_KEY},
    )


def openai_model(base_url: str, **overrides: Any) -> dict[str, Any]:
    """One alias on an OpenAI-compatible test server."""
    return {
        "provider": "openai",
        "model": "test-model",
        "base_url": base_url,
        "api_key_env": "TEST_KEY_VAR",
        "timeout_seconds": 5,
        "max_retries": 0,
        "context_window": 8192,
        **overrides,
    }


@dataclass
class RunningRouter:
    server: GrpcServer
    channel: grpc.aio.Channel
    stub: llm_pb2_grpc.LLMRouterServiceAsyncStub
    settings: Settings


async def start_router(settings: Settings, config: ModelsConfig | None = None) -> RunningRouter:
    deps = build_dependencies(settings, config=config)
    server = create_server(settings, deps)
    await server.start()
    # A plain channel: create_channel's client-side retry of UNAVAILABLE would hide which
    # status one call returns.
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return RunningRouter(server, channel, llm_pb2_grpc.LLMRouterServiceStub(channel), settings)


async def stop_router(router: RunningRouter) -> None:
    await router.channel.close()
    await router.server.stop(0)


@pytest.fixture(scope="session")
async def openai_router(
    fake_openai_server: FakeOpenAI, retrieval_server: tuple[FixedRetrieval, str]
) -> AsyncIterator[RunningRouter]:
    """The router over real gRPC, provider openai against the scripted HTTP server."""
    _, retrieval_addr = retrieval_server
    router = await start_router(
        openai_settings(fake_openai_server.base_url, retrieval_service_addr=retrieval_addr)
    )
    yield router
    await stop_router(router)


@pytest.fixture(scope="session")
async def local_router(
    embedding_addr: str, retrieval_server: tuple[FixedRetrieval, str]
) -> AsyncIterator[RunningRouter]:
    """The router over real gRPC, local provider on the real embedding server."""
    _, retrieval_addr = retrieval_server
    settings = Settings(
        port=0,
        host="127.0.0.1",
        metrics_port=None,
        llm_provider="local",
        embedding_service_addr=embedding_addr,
        retrieval_service_addr=retrieval_addr,
    )
    router = await start_router(settings)
    yield router
    await stop_router(router)


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    """The error a unary call fails with (the test fails if it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


def answer_request(**fields: object) -> llm_pb2.AnswerRequest:
    """An Answer request for tenant t1's "docs" collection, ``fields`` overriding."""
    values: dict[str, object] = {
        "question": "What is the capital of Italy?",
        "collection": "docs",
        "tenant_id": "t1",
        **fields,
    }
    return llm_pb2.AnswerRequest(**values)  # type: ignore[arg-type]
