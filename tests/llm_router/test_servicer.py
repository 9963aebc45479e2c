"""LLMRouterService over real gRPC: create_server on port 0, a real gRPC RetrievalService
with fixed chunks, and the openai provider against the scripted HTTP server (or the local
provider against the real embedding server).
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from prometheus_client import REGISTRY

from aimesh.llm.v1 import llm_pb2
from aimesh_common.channels import check_health
from tests.llm_router.conftest import (
    TEST_KEY,
    FixedRetrieval,
    RunningRouter,
    openai_settings,
    start_router,
    stop_router,
)
from tests.llm_router.openai_server import FakeOpenAI, Reply

USAGE = {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132}
CHUNKS = [
    ("rome", "Rome is the capital of Italy."),
    ("paris", "Paris is the capital of France."),
    ("berlin", "Berlin is the capital of Germany."),
]


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


def answer_request(**fields: object) -> llm_pb2.AnswerRequest:
    values: dict[str, object] = {
        "question": "What is the capital of Italy?",
        "collection": "docs",
        "tenant_id": "t1",
        **fields,
    }
    return llm_pb2.AnswerRequest(**values)  # type: ignore[arg-type]


async def test_health_and_list_models(openai_router: RunningRouter) -> None:
    assert await check_health(openai_router.channel)
    assert await check_health(openai_router.channel, "aimesh.llm.v1.LLMRouterService")
    reply = await openai_router.stub.ListModels(llm_pb2.ListModelsRequest())
    assert [model.id for model in reply.models] == ["default", "fast"]
    for model in reply.models:
        assert model.context_window == 128_000
        assert "test-model" in model.description
        assert "http" not in model.description
        assert "127.0.0.1" not in model.description
        assert TEST_KEY not in model.description


async def test_unknown_alias_is_not_found(openai_router: RunningRouter) -> None:
    error = await rpc_error(
        openai_router.stub.Summarize(llm_pb2.SummarizeRequest(text="x", model="gpt-9"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "unknown model 'gpt-9'; available: default, fast"


async def test_summarize(openai_router: RunningRouter, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply(content="A summary.", usage=USAGE))
    before = REGISTRY.get_sample_value(
        "aimesh_llm_requests_total",
        {"alias": "fast", "provider": "openai", "task": "summarize", "outcome": "OK"},
    )
    reply = await openai_router.stub.Summarize(
        llm_pb2.SummarizeRequest(text="Long text.", model="fast", style="detailed", tenant_id="t1")
    )
    assert reply.summary == "A summary."
    assert reply.model == "fast"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (120, 12)
    assert reply.usage.total_tokens == 132
    assert not reply.usage.estimated
    assert "every main point" in fake_openai.requests[-1].messages[1]["content"]
    after = REGISTRY.get_sample_value(
        "aimesh_llm_requests_total",
        {"alias": "fast", "provider": "openai", "task": "summarize", "outcome": "OK"},
    )
    assert after == (before or 0) + 1
    tokens = REGISTRY.get_sample_value(
        "aimesh_llm_tokens_total",
        {"alias": "fast", "provider": "openai", "task": "summarize", "kind": "completion"},
    )
    assert tokens is not None
    assert tokens >= 12


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (llm_pb2.SummarizeRequest(text="   "), "text must not be empty"),
        (llm_pb2.SummarizeRequest(text="x", style="haiku"), "style must be one of brief"),
        (llm_pb2.SummarizeRequest(text="x", max_words=10**6), "max_words must be at most"),
    ],
)
async def test_summarize_validation(
    openai_router: RunningRouter, request_: llm_pb2.SummarizeRequest, message: str
) -> None:
    error = await rpc_error(openai_router.stub.Summarize(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.details() or "")


async def test_answer_cites_only_given_and_cited_sources(
    openai_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    retrieval.put("t1", "docs", CHUNKS)
    fake_openai.enqueue(
        Reply(content="Rome is the capital [1], unlike Paris [2][7]. See [9].", usage=USAGE)
    )
    query_filter = struct_pb2.Struct()
    query_filter.update({"lang": "en"})
    reply = await openai_router.stub.Answer(answer_request(top_k=3, filter=query_filter))
    assert reply.answer == "Rome is the capital [1], unlike Paris [2]. See."
    assert [c.source for c in reply.citations] == [1, 2]
    assert [c.document_id for c in reply.citations] == ["rome", "paris"]
    assert reply.citations[0].chunk_id == "rome#0"
    assert reply.citations[0].text == "Rome is the capital of Italy."
    assert reply.citations[0].score == pytest.approx(0.9)
    assert json_format.MessageToDict(reply.citations[1].metadata) == {"rank": 1.0, "doc": "paris"}
    assert reply.model == "default"
    assert reply.usage.total_tokens == 132
    search = retrieval.searches[-1]
    assert (search.tenant_id, search.collection, search.top_k) == ("t1", "docs", 3)
    assert search.query == "What is the capital of Italy?"
    assert json_format.MessageToDict(search.filter) == {"lang": "en"}
    human = fake_openai.requests[-1].messages[-1]["content"]
    assert "[1] Rome is the capital of Italy." in human
    assert "[2] Paris is the capital of France." in human
    assert "[3] Berlin is the capital of Germany." in human


async def test_answer_defaults_top_k_and_handles_no_citations(
    openai_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    retrieval.put("t1", "docs", CHUNKS)
    fake_openai.enqueue(Reply(content="I don't know.", usage=USAGE))
    reply = await openai_router.stub.Answer(answer_request())
    assert reply.answer == "I don't know."
    assert list(reply.citations) == []
    assert retrieval.searches[-1].top_k == 5
    assert not retrieval.searches[-1].HasField("filter")


async def test_answer_with_no_matching_chunks(
    openai_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    retrieval.put("t1", "empty", [])
    reply = await openai_router.stub.Answer(answer_request(collection="empty"))
    assert reply.answer == "I don't know: no documents in the collection match the question."
    assert list(reply.citations) == []
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"question": "  "}, grpc.StatusCode.INVALID_ARGUMENT, "question must not be empty"),
        ({"collection": ""}, grpc.StatusCode.INVALID_ARGUMENT, "collection must not be empty"),
        ({"tenant_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "tenant_id must not be empty"),
        ({"top_k": 51}, grpc.StatusCode.INVALID_ARGUMENT, "top_k must be between 1 and 50"),
        ({"model": "nope"}, grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
        ({"collection": "missing"}, grpc.StatusCode.NOT_FOUND, "collection 'missing' does not"),
        ({"collection": "broken"}, grpc.StatusCode.UNAVAILABLE, "retrieval service failed"),
    ],
)
async def test_answer_errors(
    openai_router: RunningRouter,
    retrieval: FixedRetrieval,
    fields: dict[str, object],
    code: grpc.StatusCode,
    message: str,
) -> None:
    retrieval.put("t1", "docs", CHUNKS)
    error = await rpc_error(openai_router.stub.Answer(answer_request(**fields)))
    assert error.code() == code
    assert message in (error.details() or "")


async def test_answer_filter_error_from_retrieval_propagates(
    openai_router: RunningRouter, retrieval: FixedRetrieval
) -> None:
    retrieval.put("t1", "docs", CHUNKS)
    bad = struct_pb2.Struct()
    bad.update({"bad": 1})
    error = await rpc_error(openai_router.stub.Answer(answer_request(filter=bad)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "filter: unknown operator $bad"


async def test_answer_sources_are_packed_into_the_context_window(
    fake_openai: FakeOpenAI, retrieval_server: tuple[FixedRetrieval, str]
) -> None:
    servicer, retrieval_addr = retrieval_server
    long_chunks = [(f"d{i}", " ".join(["word"] * 400)) for i in range(5)]
    servicer.put("t1", "long", long_chunks)
    settings = openai_settings(
        fake_openai.base_url,
        retrieval_service_addr=retrieval_addr,
        context_window=2048,
        max_tokens=256,
    )
    router = await start_router(settings)
    try:
        fake_openai.enqueue(Reply(content="Words [1][5].", usage=USAGE))
        reply = await router.stub.Answer(answer_request(collection="long"))
    finally:
        await stop_router(router)
    human = fake_openai.requests[-1].messages[-1]["content"]
    assert "[3] word" in human
    assert "[4] word" not in human
    # [5] was never given to the model, so it is neither kept in the text nor cited.
    assert reply.answer == "Words [1]."
    assert [c.source for c in reply.citations] == [1]


async def test_generate_streams_over_grpc(
    openai_router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="one two three", usage=USAGE))
    request = llm_pb2.GenerateRequest(
        model="fast",
        messages=[
            llm_pb2.ChatMessage(role="system", content="Be terse."),
            llm_pb2.ChatMessage(role="user", content="Count to three."),
        ],
        max_tokens=10**6,
        temperature=0.5,
        tenant_id="t1",
    )
    replies = [reply async for reply in openai_router.stub.Generate(request)]
    assert "".join(reply.delta for reply in replies) == "one two three"
    assert len(replies) == 4
    assert all(reply.model == "fast" for reply in replies)
    assert all(reply.finish_reason == "" for reply in replies[:-1])
    assert replies[-1].finish_reason == "stop"
    assert replies[-1].usage.total_tokens == 132
    body = fake_openai.requests[-1].body
    # Larger requests are capped at the alias's configured maximum.
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 1024
    assert [m["role"] for m in body["messages"]] == ["system", "system", "user"]
    assert body["messages"][1]["content"] == "Be terse."


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages must contain at least one message"),
        ([("function", "x")], "messages[0].role must be system, user, assistant or tool"),
        ([("user", "hi"), ("assistant", "hello")], "the last message must be from the user"),
        ([("system", "x"), ("user", " ")], "messages[1].content must not be empty"),
    ],
)
async def test_generate_validation(
    openai_router: RunningRouter, messages: list[tuple[str, str]], message: str
) -> None:
    request = llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role=role, content=content) for role, content in messages]
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        [reply async for reply in openai_router.stub.Generate(request)]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (raised.value.details() or "")


async def test_generate_rejects_out_of_range_temperature(openai_router: RunningRouter) -> None:
    request = llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role="user", content="hi")], temperature=2.5
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        [reply async for reply in openai_router.stub.Generate(request)]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "temperature must be between 0 and 2" in (raised.value.details() or "")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, grpc.StatusCode.FAILED_PRECONDITION),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (500, grpc.StatusCode.UNAVAILABLE),
        (400, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_upstream_errors_reach_the_client_as_status_codes(
    openai_router: RunningRouter, fake_openai: FakeOpenAI, status: int, code: grpc.StatusCode
) -> None:
    fake_openai.enqueue(Reply(status=status, error={"message": f"upstream says {TEST_KEY}"}))
    request = llm_pb2.GenerateRequest(messages=[llm_pb2.ChatMessage(role="user", content="hi")])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        [reply async for reply in openai_router.stub.Generate(request)]
    assert raised.value.code() == code
    assert TEST_KEY not in (raised.value.details() or "")
    failed = REGISTRY.get_sample_value(
        "aimesh_llm_requests_total",
        {"alias": "default", "provider": "openai", "task": "generate", "outcome": code.name},
    )
    assert failed is not None
    assert failed >= 1


async def test_retrieval_down_is_unavailable(fake_openai: FakeOpenAI) -> None:
    from tests.conftest import free_port

    settings = openai_settings(
        fake_openai.base_url,
        retrieval_service_addr=f"127.0.0.1:{free_port()}",
        backend_timeout_seconds=5,
    )
    router = await start_router(settings)
    try:
        error = await rpc_error(router.stub.Answer(answer_request()))
    finally:
        await stop_router(router)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "retrieval service unavailable" in (error.details() or "")


async def test_local_provider_answers_with_citations(
    local_router: RunningRouter, retrieval: FixedRetrieval
) -> None:
    retrieval.put(
        "t1",
        "facts",
        [
            ("tower", "The Eiffel Tower is in Paris. It was completed in 1889."),
            ("everest", "Mount Everest is the highest mountain on Earth."),
            ("python", "Python is a programming language created by Guido van Rossum."),
        ],
    )
    reply = await local_router.stub.Answer(
        answer_request(collection="facts", question="Who created the Python language?")
    )
    assert "[3]" in reply.answer
    assert [c.document_id for c in reply.citations] == ["python"]
    assert reply.usage.estimated
    unrelated = await local_router.stub.Answer(
        answer_request(collection="facts", question="How do I bake sourdough bread?")
    )
    assert unrelated.answer == "I don't know: the sources do not answer this question."
    assert list(unrelated.citations) == []


async def test_local_provider_models_and_generate(local_router: RunningRouter) -> None:
    models = await local_router.stub.ListModels(llm_pb2.ListModelsRequest())
    assert {model.context_window for model in models.models} == {4096}
    assert all("extractive" in model.description for model in models.models)
    request = llm_pb2.GenerateRequest(messages=[llm_pb2.ChatMessage(role="user", content="Hi")])
    replies = [reply async for reply in local_router.stub.Generate(request)]
    assert "cannot compose free text" in "".join(reply.delta for reply in replies)
    assert replies[-1].finish_reason == "stop"
    assert replies[-1].usage.estimated
