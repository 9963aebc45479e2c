"""The router's calls to hosted models carry its trace: a real router over gRPC, tracing with
its own provider, against the real HTTP server speaking the OpenAI protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc
from aimesh_common.server import GrpcServer
from aimesh_llm_router.providers import OpenAIProvider, ProviderContext
from aimesh_llm_router.providers.base import SummarizeTask
from aimesh_llm_router.server import build_dependencies, create_server
from aimesh_llm_router.templates import load_prompt_library
from tests.llm_router.conftest import FixedRetrieval, openai_settings
from tests.llm_router.openai_server import FakeOpenAI, Reply

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


@dataclass
class TracedRouter:
    server: GrpcServer
    stub: llm_pb2_grpc.LLMRouterServiceAsyncStub
    spans: InMemorySpanExporter


@pytest.fixture
async def traced_router(
    fake_openai: FakeOpenAI, retrieval_server: tuple[FixedRetrieval, str]
) -> AsyncIterator[TracedRouter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _, retrieval_addr = retrieval_server
    settings = openai_settings(fake_openai.base_url, retrieval_service_addr=retrieval_addr)
    server = create_server(settings, build_dependencies(settings, tracer_provider=provider))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield TracedRouter(server, llm_pb2_grpc.LLMRouterServiceStub(channel), exporter)
    await server.stop(0)
    provider.shutdown()


def _upstream_span(router: TracedRouter, traceparent: str, rpc: str) -> ReadableSpan:
    """The router's HTTP CLIENT span the upstream got as ``traceparent``, checked to be a
    child of the router's SERVER span of ``rpc``, itself continuing the caller's trace."""
    _, trace_id, span_id, _ = traceparent.split("-")
    assert trace_id == TRACE_ID
    spans = {format(s.context.span_id, "016x"): s for s in router.spans.get_finished_spans()}
    call = spans[span_id]
    assert call.kind == SpanKind.CLIENT
    assert call.parent is not None
    served = spans[format(call.parent.span_id, "016x")]
    assert (served.kind, served.name) == (SpanKind.SERVER, f"/aimesh.llm.v1.LLMRouterService/{rpc}")
    assert served.parent is not None
    assert format(served.parent.span_id, "016x") == TRACEPARENT.split("-")[2]
    return call


async def test_a_hosted_model_call_carries_the_routers_trace(
    traced_router: TracedRouter, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="Short.", usage=USAGE))
    reply = await traced_router.stub.Summarize(
        llm_pb2.SummarizeRequest(text="A long text.", tenant_id="t1"),
        metadata=(("traceparent", TRACEPARENT),),
        timeout=10,
    )
    assert reply.summary == "Short."
    call = _upstream_span(
        traced_router, fake_openai.requests[-1].headers["traceparent"], "Summarize"
    )
    assert call.attributes is not None
    assert str(call.attributes.get("http.url", call.attributes.get("url.full"))).endswith(
        "/chat/completions"
    )


async def test_a_streamed_hosted_model_call_carries_the_routers_trace(
    traced_router: TracedRouter, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="one two", usage=USAGE))
    request = llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role="user", content="Count.")], tenant_id="t1"
    )
    replies = [
        reply
        async for reply in traced_router.stub.Generate(
            request, metadata=(("traceparent", TRACEPARENT),), timeout=10
        )
    ]
    assert "".join(reply.delta for reply in replies) == "one two"
    assert fake_openai.requests[-1].body["stream"] is True
    _upstream_span(traced_router, fake_openai.requests[-1].headers["traceparent"], "Generate")


async def test_no_trace_goes_upstream_when_the_router_does_not_trace(
    fake_openai: FakeOpenAI,
) -> None:
    provider = OpenAIProvider.from_context(
        ProviderContext(
            settings=openai_settings(fake_openai.base_url),
            prompts=load_prompt_library(),
            embedding=None,
        )
    )
    fake_openai.enqueue(Reply(content="Short.", usage=USAGE))
    with TracerProvider().get_tracer("test").start_as_current_span("caller"):
        await provider.summarize(
            SummarizeTask(text="A text.", style="brief", max_words=0, max_tokens=20)
        )
    await provider.aclose()
    assert "traceparent" not in fake_openai.requests[-1].headers
