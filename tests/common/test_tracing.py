"""Traces across the services: server spans per RPC continuing the caller's trace, and the
trace passed on to backends, checked with a real OTLP/HTTP receiver.

The receiver is a small HTTP server decoding the protobuf ``ExportTraceServiceRequest``s the
services' exporters send (as an OpenTelemetry collector would). One ``/v1/ask`` through the
real gateway, llm-router, retrieval (Milvus Lite) and embedding (the real model) must give
one trace whose spans nest gateway -> router -> retrieval -> embedding.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_common.channels import create_channel
from aimesh_common.embedding_client import EmbeddingClient
from aimesh_common.errors import InvalidArgument
from aimesh_common.server import build_grpc_server
from aimesh_common.tracing import create_tracer_provider, tracer_provider_for
from aimesh_embedding.config import Settings as EmbeddingSettings
from aimesh_embedding.model import TorchEncoder
from aimesh_embedding.server import create_server as create_embedding_server
from aimesh_gateway.main import create_app
from aimesh_gateway.state import state_of
from aimesh_llm_router.config import Settings as RouterSettings
from aimesh_llm_router.server import build_dependencies
from aimesh_llm_router.server import create_server as create_router_server
from aimesh_retrieval.config import Settings as RetrievalSettings
from aimesh_retrieval.server import create_server as create_retrieval_server
from aimesh_retrieval.store import MilvusStore
from tests.gateway.helpers import editor, settings_for, user

PARIS = "Paris is the capital of France."
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    status_code: int
    grpc_status: int | None = None


class OtlpReceiver:
    """A real OTLP/HTTP trace endpoint (``POST /v1/traces``, protobuf) that keeps the spans."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: Request) -> Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.body())
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=attributes.get("service.name", ""),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            status_code=span.status.code,
                            grpc_status=next(
                                (
                                    a.value.int_value
                                    for a in span.attributes
                                    if a.key == "rpc.grpc.status_code"
                                ),
                                None,
                            ),
                        )
                    )
        return Response(
            ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf"
        )

    async def start(self) -> None:
        app = Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:  # noqa: ASYNC110 - uvicorn has no startup event
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    server = OtlpReceiver()
    await server.start()
    yield server
    await server.stop()


class _Echo(embedding_pb2_grpc.EmbeddingServiceServicer):
    """A tiny servicer that calls a backend (itself, once) so propagation can be seen."""

    def __init__(self) -> None:
        self.backend: embedding_pb2_grpc.EmbeddingServiceAsyncStub | None = None

    async def Info(
        self, request: embedding_pb2.InfoRequest, context: object
    ) -> embedding_pb2.InfoResponse:
        return embedding_pb2.InfoResponse(model="echo", dimension=3)

    async def Embed(
        self, request: embedding_pb2.EmbedRequest, context: object
    ) -> embedding_pb2.EmbedResponse:
        if not request.inputs:
            raise InvalidArgument("inputs must not be empty")
        if request.inputs[0] == "boom":
            raise RuntimeError("a bug")
        assert self.backend is not None
        await self.backend.Info(embedding_pb2.InfoRequest(), timeout=5)
        return embedding_pb2.EmbedResponse()

    async def Rerank(
        self, request: embedding_pb2.RerankRequest, context: object
    ) -> embedding_pb2.RerankResponse:
        return embedding_pb2.RerankResponse()


async def test_rpcs_continue_the_callers_trace_and_pass_it_on(receiver: OtlpReceiver) -> None:
    provider = create_tracer_provider(receiver.endpoint, "echo")
    servicer = _Echo()

    def register(server: grpc.aio.Server) -> None:
        embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(servicer, server)

    server = build_grpc_server(
        host="127.0.0.1",
        port=0,
        register=register,
        service_names=["aimesh.embedding.v1.EmbeddingService"],
        tracer_provider=provider,
    )
    await server.start()
    address = f"127.0.0.1:{server.port}"
    backend = create_channel(address, tracer_provider=provider)
    servicer.backend = embedding_pb2_grpc.EmbeddingServiceStub(backend)
    caller = grpc.aio.insecure_channel(address)
    stub = embedding_pb2_grpc.EmbeddingServiceStub(caller)
    try:
        await stub.Embed(
            embedding_pb2.EmbedRequest(inputs=["x"]),
            metadata=(("traceparent", TRACEPARENT),),
            timeout=5,
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Embed(embedding_pb2.EmbedRequest(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Embed(embedding_pb2.EmbedRequest(inputs=["boom"]), timeout=5)
        await stub.Info(embedding_pb2.InfoRequest(), timeout=5)  # no traceparent: a new trace
    finally:
        await caller.close()
        await backend.close()
        await server.stop(0)
    # The exporter posts synchronously and the receiver runs on this loop: flush in a thread.
    await asyncio.to_thread(provider.shutdown)
    spans = receiver.spans
    assert {s.service for s in spans} == {"echo"}
    # Server spans (kind 2) arrive in the order they ended: a child before its parent.
    # The library names them after the full method, "/<service>/<method>".
    served = [s for s in spans if s.kind == 2]
    embed_ok, embed_bad, embed_bug = [
        s for s in served if s.name == "/aimesh.embedding.v1.EmbeddingService/Embed"
    ]
    nested_info, fresh_info = [
        s for s in served if s.name == "/aimesh.embedding.v1.EmbeddingService/Info"
    ]
    # The first Embed continues the caller's trace; the Info it called is the child of
    # the CLIENT span (kind 3) of that call, itself the child of the Embed.
    assert embed_ok.trace_id == TRACEPARENT.split("-")[1]
    assert embed_ok.parent_id == TRACEPARENT.split("-")[2]
    assert embed_ok.status_code == 0  # unset: fine
    assert embed_ok.grpc_status == 0
    [info_call] = [s for s in spans if s.kind == 3]
    assert info_call.name == "/aimesh.embedding.v1.EmbeddingService/Info"
    assert (info_call.trace_id, info_call.parent_id) == (embed_ok.trace_id, embed_ok.span_id)
    assert nested_info.trace_id == embed_ok.trace_id
    assert nested_info.parent_id == info_call.span_id
    # Every span records the call's status code. Following the OpenTelemetry conventions
    # for servers, a caller's mistake (INVALID_ARGUMENT) leaves the status unset and a
    # fault of the server (INTERNAL) makes it an error span.
    assert (embed_bad.grpc_status, embed_bad.status_code) == (3, 0)  # INVALID_ARGUMENT
    assert (embed_bug.grpc_status, embed_bug.status_code) == (13, 2)  # INTERNAL: ERROR
    # A call without a traceparent starts its own trace.
    assert embed_bad.parent_id == ""
    assert fresh_info.parent_id == ""
    assert fresh_info.trace_id not in (embed_ok.trace_id, embed_bad.trace_id)
    # Health checks are not traced.
    assert not [s for s in spans if "grpc.health" in s.name]


@pytest.mark.slow
async def test_one_ask_is_one_trace_across_the_four_services(
    receiver: OtlpReceiver, embedding_encoder: TorchEncoder, tmp_path: Path
) -> None:
    providers = {
        name: create_tracer_provider(receiver.endpoint, f"aimesh-{name}")
        for name in ("embedding", "retrieval", "llm-router")
    }
    embedding = create_embedding_server(
        EmbeddingSettings(port=0, host="127.0.0.1", metrics_port=None),
        embedding_encoder,
        providers["embedding"],
    )
    await embedding.start()
    embedding_addr = f"127.0.0.1:{embedding.port}"
    retrieval_settings = RetrievalSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        data_dir=tmp_path / "retrieval",
        embedding_service_addr=embedding_addr,
    )
    store = MilvusStore.open(retrieval_settings)
    embedder = EmbeddingClient.connect(embedding_addr, tracer_provider=providers["retrieval"])
    retrieval = create_retrieval_server(
        retrieval_settings, store, embedder, None, providers["retrieval"]
    )
    await retrieval.start()
    retrieval_addr = f"127.0.0.1:{retrieval.port}"
    router_settings = RouterSettings(
        port=0,
        host="127.0.0.1",
        metrics_port=None,
        llm_provider="local",
        data_dir=tmp_path / "router",
        embedding_service_addr=embedding_addr,
        retrieval_service_addr=retrieval_addr,
    )
    deps = build_dependencies(router_settings, tracer_provider=providers["llm-router"])
    router = create_router_server(router_settings, deps)
    await router.start()
    app = create_app(
        settings_for(
            router_addr=f"127.0.0.1:{router.port}",
            retrieval_addr=retrieval_addr,
            embedding_addr=embedding_addr,
            otlp_endpoint=receiver.endpoint,
        )
    )
    tenant = f"trace-{uuid.uuid4().hex[:8]}"
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                stored = await client.post(
                    "/v1/collections/facts/documents",
                    json={
                        "documents": [{"id": "paris", "text": "Paris is the capital of France."}]
                    },
                    headers=editor(tenant),
                )
                assert stored.status_code in (200, 201), stored.text
                asked = await client.post(
                    "/v1/ask",
                    json={"question": "What is the capital of France?", "collection": "facts"},
                    headers=user(tenant),
                )
                assert asked.status_code == 200, asked.text
            provider = state_of(app).tracer_provider
            assert provider is not None
            await asyncio.to_thread(provider.force_flush)
    finally:
        await router.stop(0)
        await retrieval.stop(0)
        await embedder.close()
        await store.close()
        await embedding.stop(0)
        for provider in providers.values():
            await asyncio.to_thread(provider.shutdown)

    ask = next(s for s in receiver.spans if s.name == "POST /v1/ask")
    trace = [s for s in receiver.spans if s.trace_id == ask.trace_id]
    by_id = {s.span_id: s for s in trace}

    def parent_of(span: ReceivedSpan) -> ReceivedSpan:
        return by_id[span.parent_id]

    def caller_of(span: ReceivedSpan) -> ReceivedSpan:
        """The server span that made the call ``span`` serves: a service's backend calls
        are CLIENT spans (kind 3) of the caller, between the two server spans."""
        call = parent_of(span)
        if call.kind != 3:
            return call
        assert call.name == span.name
        return parent_of(call)

    def served(method: str) -> list[ReceivedSpan]:
        return [s for s in trace if s.name == f"/{method}" and s.kind == 2]

    # A non-streamed ask gathers the router's streamed answer (it is charged if cut short).
    [answer] = served("aimesh.llm.v1.LLMRouterService/StreamAnswer")
    [search] = served("aimesh.retrieval.v1.RetrievalService/Search")
    embeds = served("aimesh.embedding.v1.EmbeddingService/Embed")
    assert ask.service == "aimesh-gateway"
    assert ask.parent_id == ""
    assert (answer.service, caller_of(answer)) == ("aimesh-llm-router", ask)
    assert (search.service, caller_of(search)) == ("aimesh-retrieval", answer)
    assert parent_of(search).service == "aimesh-llm-router"  # the router's CLIENT span
    # The query is embedded for the search; the local provider embeds sentences itself.
    assert search in [caller_of(embed) for embed in embeds]
    assert {embed.service for embed in embeds} == {"aimesh-embedding"}
    assert all(caller_of(embed) in (search, answer) for embed in embeds)
    # The ingest before it was a trace of its own.
    upsert = next(s for s in receiver.spans if s.name.endswith("RetrievalService/UpsertDocuments"))
    assert upsert.trace_id != ask.trace_id


def test_tracing_is_off_unless_an_endpoint_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIMESH_OTLP_ENDPOINT", raising=False)
    assert RouterSettings().otlp_endpoint is None
    assert tracer_provider_for(RouterSettings().otlp_endpoint, "aimesh-llm-router") is None
    monkeypatch.setenv("AIMESH_OTLP_ENDPOINT", "http://collector:4318")
    for settings in (RouterSettings(), RetrievalSettings(), EmbeddingSettings()):
        assert settings.otlp_endpoint == "http://collector:4318"
    provider = tracer_provider_for("http://collector:4318", "aimesh-retrieval")
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "aimesh-retrieval"
    provider.shutdown()
