"""Every reply says which provider kind answered and which prompt template it used
(``provider``, ``prompt_version``), after fallbacks, over real gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import pytest

from aimesh.llm.v1 import llm_pb2
from tests.llm_router.conftest import (
    FixedRetrieval,
    RunningRouter,
    models_config,
    openai_model,
    openai_settings,
    start_router,
    stop_router,
)
from tests.llm_router.messages import has_content
from tests.llm_router.openai_server import FakeOpenAI, Reply

USAGE = {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}
CHUNKS = [("paris", "Paris is the capital of France."), ("rome", "Rome is in Italy.")]


def summarize(**fields: Any) -> llm_pb2.SummarizeRequest:
    values: dict[str, Any] = {"text": "Cats sleep. Dogs bark.", "tenant_id": "t1", **fields}
    return llm_pb2.SummarizeRequest(**values)


def answer(collection: str = "facts") -> llm_pb2.AnswerRequest:
    return llm_pb2.AnswerRequest(question="Where is Paris?", collection=collection, tenant_id="t1")


def generate() -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role="user", content="Hello")], tenant_id="t1"
    )


async def events(call: AsyncIterable[llm_pb2.StreamEvent]) -> list[llm_pb2.StreamEvent]:
    return [event async for event in call]


async def test_summarize_and_answer_name_provider_and_template(
    openai_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    fake_openai.enqueue(Reply(content="Animals rest.", usage=USAGE))
    summary = await openai_router.stub.Summarize(summarize())
    assert (summary.provider, summary.prompt_version) == ("openai", "summarize/v1")

    retrieval.put("t1", "facts", CHUNKS)
    fake_openai.enqueue(Reply(content="Paris is in France [1].", usage=USAGE))
    reply = await openai_router.stub.Answer(answer())
    assert (reply.provider, reply.prompt_version) == ("openai", "qa/v1")


async def test_an_answer_without_sources_names_no_provider(
    openai_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    """No chunk matched: the router answers itself, no model and no template ran."""
    retrieval.put("t1", "void", [])
    reply = await openai_router.stub.Answer(answer("void"))
    assert reply.answer.startswith("I don't know")
    assert (reply.provider, reply.prompt_version) == ("", "")
    streamed = await events(openai_router.stub.StreamAnswer(answer("void")))
    assert (streamed[-1].done.provider, streamed[-1].done.prompt_version) == ("", "")
    assert streamed[-1].done.model == "default"
    assert not fake_openai.requests


async def test_generate_names_them_on_every_message(
    openai_router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="Hi there, friend", usage=USAGE))
    messages = [
        message async for message in openai_router.stub.Generate(generate()) if has_content(message)
    ]
    assert len(messages) > 1
    assert {(m.provider, m.prompt_version) for m in messages} == {("openai", "chat/v1")}


async def test_stream_done_events_name_them(
    openai_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    fake_openai.enqueue(Reply(content="Animals rest.", usage=USAGE))
    summary = await events(openai_router.stub.StreamSummarize(summarize()))
    done = summary[-1].done
    assert (done.model, done.provider, done.prompt_version) == (
        "default",
        "openai",
        "summarize/v1",
    )
    retrieval.put("t1", "facts", CHUNKS)
    fake_openai.enqueue(Reply(content="Paris [1].", usage=USAGE))
    answered = await events(openai_router.stub.StreamAnswer(answer()))
    assert (answered[-1].done.provider, answered[-1].done.prompt_version) == ("openai", "qa/v1")


@pytest.fixture
async def fallback_router(
    fake_openai: FakeOpenAI,
    backup_openai: FakeOpenAI,
    retrieval_server: tuple[FixedRetrieval, str],
) -> AsyncIterator[RunningRouter]:
    """default (summarize v1) falls back to backup, whose alias selects summarize v2."""
    config = models_config(
        {
            "default": openai_model(fake_openai.base_url, fallbacks=["backup"]),
            "backup": openai_model(
                backup_openai.base_url, model="backup-model", prompts={"summarize": 2}
            ),
        },
        retry={"base_delay_seconds": 0.01, "max_delay_seconds": 0.05},
    )
    settings = openai_settings(fake_openai.base_url, retrieval_service_addr=retrieval_server[1])
    running = await start_router(settings, config)
    yield running
    await stop_router(running)


async def test_the_fallback_that_answered_is_reported(
    fallback_router: RunningRouter, fake_openai: FakeOpenAI, backup_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="primary", usage=USAGE))
    first = await fallback_router.stub.Summarize(summarize())
    assert (first.model, first.prompt_version) == ("default", "summarize/v1")

    fake_openai.enqueue(Reply(status=503))
    backup_openai.enqueue(Reply(content="from the backup", usage=USAGE))
    reply = await fallback_router.stub.Summarize(summarize())
    assert reply.summary == "from the backup"
    assert (reply.model, reply.provider, reply.prompt_version) == (
        "backup",
        "openai",
        "summarize/v2",
    )

    fake_openai.enqueue(Reply(status=503))
    backup_openai.enqueue(Reply(content="streamed backup", usage=USAGE))
    streamed = await events(fallback_router.stub.StreamSummarize(summarize()))
    done = streamed[-1].done
    assert (done.model, done.provider, done.prompt_version) == ("backup", "openai", "summarize/v2")


async def test_the_local_provider_renders_no_template(
    local_router: RunningRouter, retrieval: FixedRetrieval
) -> None:
    reply = await local_router.stub.Summarize(
        summarize(text="Cats sleep all day. Dogs bark at night. Birds sing in the morning.")
    )
    assert (reply.provider, reply.prompt_version) == ("local", "")
    retrieval.put("t1", "facts", CHUNKS)
    answered = await local_router.stub.Answer(answer())
    assert (answered.provider, answered.prompt_version) == ("local", "")
    messages = [m async for m in local_router.stub.Generate(generate()) if has_content(m)]
    assert {(m.provider, m.prompt_version) for m in messages} == {("local", "")}
