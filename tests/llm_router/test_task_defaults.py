"""Which alias serves each task when a request names none (``defaults``), the local model
server's alias without a models file, and the extractive answer that replaces a model's
grounded answer whose citations do not validate. Over real gRPC, with the real embedding
model behind the extractive provider and a scripted OpenAI-compatible server standing in
for the model server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from aimesh.llm.v1 import llm_pb2
from aimesh_llm_router.config import Settings
from aimesh_llm_router.modelconfig import (
    LOCAL_MODEL_ALIAS,
    ModelConfigError,
    default_models_config,
    load_models_config,
)
from aimesh_llm_router.providers import PROVIDERS
from tests.conftest import free_port
from tests.llm_router.conftest import (
    FixedRetrieval,
    RunningRouter,
    start_router,
    stop_router,
)
from tests.llm_router.messages import has_content
from tests.llm_router.openai_server import FakeOpenAI, Reply

USAGE = {"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46}
CHUNKS = [
    ("lighthouse", "The Harbor Lighthouse was built in 1887 by the port authority."),
    ("bridge", "The old stone bridge crosses the river north of the market."),
]
QUESTION = "When was the Harbor Lighthouse built?"


def local_settings(embedding: str, retrieval: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "port": 0,
        "host": "127.0.0.1",
        "metrics_port": None,
        "llm_provider": "local",
        "embedding_service_addr": embedding,
        "retrieval_service_addr": retrieval,
        "request_timeout_seconds": 5,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
async def mesh_router(
    fake_openai: FakeOpenAI, embedding_addr: str, retrieval_server: tuple[FixedRetrieval, str]
) -> AsyncIterator[RunningRouter]:
    """No models file: the extractor as default, the model server (scripted) as local-model."""
    _, retrieval_addr = retrieval_server
    settings = local_settings(
        embedding_addr, retrieval_addr, llm_local_model_url=fake_openai.base_url
    )
    router = await start_router(settings)
    yield router
    await stop_router(router)


def chat(**fields: Any) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role="user", content="Say hello.")],
        tenant_id="t1",
        **fields,
    )


def ask(**fields: Any) -> llm_pb2.AnswerRequest:
    return llm_pb2.AnswerRequest(question=QUESTION, collection="town", tenant_id="t1", **fields)


def fallbacks(from_alias: str, to_alias: str) -> float:
    value = REGISTRY.get_sample_value(
        "aimesh_llm_citation_fallbacks_total",
        {"from_alias": from_alias, "to_alias": to_alias, "task": "answer"},
    )
    return value or 0.0


# --- configuration -------------------------------------------------------------------


def test_defaults_name_known_aliases(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n  default: {provider: local}\n  chatty: {provider: local}\n"
        "defaults: {chat: chatty, qa: nowhere, rag: default}\n",
        encoding="utf-8",
    )
    with pytest.raises(ModelConfigError) as caught:
        load_models_config(path, frozenset(PROVIDERS), {})
    assert "defaults.rag: Extra inputs are not permitted" in caught.value.problems
    path.write_text(
        "models:\n  default: {provider: local}\n  chatty: {provider: local}\n"
        "defaults: {chat: chatty, qa: nowhere}\n",
        encoding="utf-8",
    )
    with pytest.raises(ModelConfigError) as caught:
        load_models_config(path, frozenset(PROVIDERS), {})
    assert caught.value.problems == ["defaults.qa: unknown alias 'nowhere'"]
    path.write_text(
        "models:\n  default: {provider: local}\n  chatty: {provider: local}\n"
        "defaults: {chat: chatty}\n",
        encoding="utf-8",
    )
    config = load_models_config(path, frozenset(PROVIDERS), {})
    assert (config.defaults.chat, config.defaults.summarize, config.defaults.qa) == (
        "chatty",
        "default",
        "default",
    )


def test_without_a_file_the_model_server_serves_chat_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OPENAI_API_KEY", "AIMESH_OPENAI_API_KEY", "AIMESH_LLM_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    plain = default_models_config(Settings())
    assert set(plain.models) == {"default", "fast"}
    assert plain.defaults.chat == "default"

    monkeypatch.setenv("AIMESH_LLM_LOCAL_MODEL_URL", "http://127.0.0.1:8090/v1")
    config = default_models_config(Settings())
    spec = config.models[LOCAL_MODEL_ALIAS]
    assert (spec.provider, spec.base_url, spec.model) == (
        "openai",
        "http://127.0.0.1:8090/v1",
        "smollm2-135m-instruct",
    )
    assert spec.fallbacks == ["default"]
    assert spec.max_retries == 0
    assert (spec.max_tokens, spec.context_window) == (256, 4096)
    assert (config.defaults.chat, config.defaults.summarize, config.defaults.qa) == (
        LOCAL_MODEL_ALIAS,
        "default",
        "default",
    )

    # With a hosted model as default, chat stays on it; the local model is still listed.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    hosted = default_models_config(Settings())
    assert hosted.defaults.chat == "default"
    assert LOCAL_MODEL_ALIAS in hosted.models


# --- per-task defaults over gRPC ------------------------------------------------------


async def test_list_models_says_which_tasks_each_alias_serves(mesh_router: RunningRouter) -> None:
    listed = await mesh_router.stub.ListModels(llm_pb2.ListModelsRequest())
    served = {model.id: list(model.default_for) for model in listed.models}
    assert served == {"default": ["summarize", "qa"], "fast": [], LOCAL_MODEL_ALIAS: ["chat"]}


async def test_chat_goes_to_the_model_and_grounded_tasks_to_the_extractor(
    mesh_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    fake_openai.enqueue(Reply(content="Hello there, friend!", usage=USAGE))
    messages = [m async for m in mesh_router.stub.Generate(chat()) if has_content(m)]
    assert {(m.model, m.provider) for m in messages} == {(LOCAL_MODEL_ALIAS, "openai")}
    assert "".join(m.delta for m in messages) == "Hello there, friend!"
    assert fake_openai.requests[0].body["model"] == "smollm2-135m-instruct"

    # An alias named in the request wins over the task's default.
    named = [m async for m in mesh_router.stub.Generate(chat(model="default")) if has_content(m)]
    assert {(m.model, m.provider) for m in named} == {("default", "local")}

    retrieval.put("t1", "town", CHUNKS)
    answered = await mesh_router.stub.Answer(ask())
    assert (answered.model, answered.provider) == ("default", "local")
    assert "1887" in answered.answer
    summary = await mesh_router.stub.Summarize(
        llm_pb2.SummarizeRequest(text="Cats sleep a lot. Dogs bark at night.", tenant_id="t1")
    )
    assert (summary.model, summary.provider) == ("default", "local")
    assert len(fake_openai.requests) == 1  # only the chat reached the model

    plain = await mesh_router.stub.CreateConversation(
        llm_pb2.CreateConversationRequest(tenant_id="t1", user_id="u1")
    )
    grounded = await mesh_router.stub.CreateConversation(
        llm_pb2.CreateConversationRequest(tenant_id="t1", user_id="u1", collection="town")
    )
    assert (plain.model, grounded.model) == (LOCAL_MODEL_ALIAS, "default")


async def test_chat_falls_back_to_the_extractor_while_the_model_server_is_down(
    embedding_addr: str, retrieval_server: tuple[FixedRetrieval, str]
) -> None:
    """A model server still loading (or gone) refuses connections: chat still answers."""
    _, retrieval_addr = retrieval_server
    closed = f"http://127.0.0.1:{free_port()}/v1"
    router = await start_router(
        local_settings(embedding_addr, retrieval_addr, llm_local_model_url=closed)
    )
    try:
        messages = [m async for m in router.stub.Generate(chat()) if has_content(m)]
        assert {(m.model, m.provider) for m in messages} == {("default", "local")}
        assert "".join(m.delta for m in messages).strip()
    finally:
        await stop_router(router)


# --- answers whose citations do not validate -----------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "It was built in 1887 [7].",  # a source never given
        "It was built in 1887.",  # no citation at all
        "It was built in 1887 [1, 9].",  # one valid, one not
    ],
)
async def test_an_answer_with_invalid_citations_is_replaced_by_the_extractive_one(
    mesh_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval, content: str
) -> None:
    retrieval.put("t1", "town", CHUNKS)
    before = fallbacks(LOCAL_MODEL_ALIAS, "default")
    fake_openai.enqueue(Reply(content=content, usage=USAGE))
    reply = await mesh_router.stub.Answer(ask(model=LOCAL_MODEL_ALIAS))
    assert (reply.model, reply.provider) == ("default", "local")
    assert (reply.fallback_reason, reply.replaced_model) == ("invalid_citations", LOCAL_MODEL_ALIAS)
    assert "1887" in reply.answer
    assert "[1]" in reply.answer
    assert [c.document_id for c in reply.citations] == ["lighthouse"]
    assert reply.usage.prompt_tokens >= USAGE["prompt_tokens"]  # the model's call counts too
    assert fallbacks(LOCAL_MODEL_ALIAS, "default") == before + 1


async def test_an_answer_with_valid_citations_is_kept(
    mesh_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    retrieval.put("t1", "town", CHUNKS)
    before = fallbacks(LOCAL_MODEL_ALIAS, "default")
    fake_openai.enqueue(Reply(content="The port authority built it in 1887 [1].", usage=USAGE))
    reply = await mesh_router.stub.Answer(ask(model=LOCAL_MODEL_ALIAS))
    assert (reply.model, reply.provider) == (LOCAL_MODEL_ALIAS, "openai")
    assert (reply.fallback_reason, reply.replaced_model) == ("", "")
    assert reply.answer == "The port authority built it in 1887 [1]."
    assert fallbacks(LOCAL_MODEL_ALIAS, "default") == before


async def test_a_streamed_answer_with_invalid_citations_is_replaced(
    mesh_router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    retrieval.put("t1", "town", CHUNKS)
    before = fallbacks(LOCAL_MODEL_ALIAS, "default")
    fake_openai.enqueue(Reply(content="The bridge was built in 1887 [3].", usage=USAGE))
    events = [
        e
        async for e in mesh_router.stub.StreamAnswer(ask(model=LOCAL_MODEL_ALIAS))
        if has_content(e)
    ]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "sources"
    assert "delta" in kinds
    assert kinds[-4:] == ["replace", "citations", "usage", "done"]
    replaced = events[-4].replace
    assert "1887" in replaced
    assert "[1]" in replaced
    assert [c.document_id for c in events[-3].citations.items] == ["lighthouse"]
    done = events[-1].done
    assert (done.model, done.provider) == ("default", "local")
    assert (done.fallback_reason, done.replaced_model) == ("invalid_citations", LOCAL_MODEL_ALIAS)
    assert fallbacks(LOCAL_MODEL_ALIAS, "default") == before + 1

    # A valid streamed answer carries no replace event.
    fake_openai.enqueue(Reply(content="Built in 1887 [1].", usage=USAGE))
    kept = [
        e
        async for e in mesh_router.stub.StreamAnswer(ask(model=LOCAL_MODEL_ALIAS))
        if has_content(e)
    ]
    assert "replace" not in [event.WhichOneof("event") for event in kept]
    assert kept[-1].done.fallback_reason == ""
