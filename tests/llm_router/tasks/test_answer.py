"""Answer and StreamAnswer over real gRPC: a real gRPC RetrievalService with fixed chunks,
the openai provider against the scripted HTTP server (or the local provider)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from aimesh.llm.v1 import llm_pb2
from tests.llm_router.conftest import (
    FixedRetrieval,
    RunningRouter,
    answer_request,
    openai_settings,
    rpc_error,
    start_router,
    stop_router,
)
from tests.llm_router.messages import has_content
from tests.llm_router.openai_server import FakeOpenAI, Reply

USAGE = {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132}
# Round numbers for sums over several calls.
ROUND_USAGE = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
CHUNKS = [
    ("rome", "Rome is the capital of Italy."),
    ("paris", "Paris is the capital of France."),
    ("berlin", "Berlin is the capital of Germany."),
]


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


async def test_answer_passes_rerank_to_the_search(
    openai_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    retrieval.put("t1", "docs", CHUNKS)
    fake_openai.enqueue(Reply(content="Rome [1].", usage=USAGE))
    await openai_router.stub.Answer(answer_request())
    assert not retrieval.searches[-1].HasField("rerank")  # the collection's default
    fake_openai.enqueue(Reply(content="Rome [1].", usage=USAGE))
    await openai_router.stub.Answer(answer_request(rerank=False))
    assert retrieval.searches[-1].HasField("rerank")
    assert retrieval.searches[-1].rerank is False
    error = await rpc_error(openai_router.stub.Answer(answer_request(rerank=True)))
    assert retrieval.searches[-1].rerank is True
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no reranker configured" in (error.details() or "")


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


async def test_stream_answer_events(
    openai_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    retrieval.put("acme", "kb", [("d1", "Paris is in France."), ("d2", "Rome is in Italy.")])
    fake_openai.enqueue(Reply(content="Paris [1] and [9].", usage=ROUND_USAGE))
    events = [
        event
        async for event in openai_router.stub.StreamAnswer(
            llm_pb2.AnswerRequest(question="Where is Paris?", collection="kb", tenant_id="acme")
        )
        if has_content(event)
    ]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "sources"
    assert kinds[-4:] == ["replace", "citations", "usage", "done"]
    assert [i.document_id for i in events[0].sources.items] == ["d1", "d2"]
    assert "".join(e.delta for e in events) == "Paris [1] and [9]."
    # The citation of a source never given is taken out: the whole text replaces the
    # deltas, and is the text the unary Answer returns (a non-streamed client of the
    # gateway gets its reply gathered from this stream).
    assert events[-4].replace == "Paris [1] and."
    assert events[-1].done.fallback_reason == ""
    assert [(c.source, c.document_id) for c in events[-3].citations.items] == [(1, "d1")]
    fake_openai.enqueue(Reply(content="Paris [1] and [9].", usage=ROUND_USAGE))
    whole = await openai_router.stub.Answer(
        llm_pb2.AnswerRequest(question="Where is Paris?", collection="kb", tenant_id="acme")
    )
    assert whole.answer == events[-4].replace


async def test_stream_answer_without_matching_chunks(
    openai_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    retrieval.put("acme", "empty", [])
    events = [
        event
        async for event in openai_router.stub.StreamAnswer(
            llm_pb2.AnswerRequest(question="Anything?", collection="empty", tenant_id="acme")
        )
    ]
    assert [e.WhichOneof("event") for e in events] == ["sources", "delta", "usage", "done"]
    assert events[1].delta.startswith("I don't know")
    assert not fake_openai.requests
