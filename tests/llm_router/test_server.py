"""Wiring: provider selection from settings, and the console script as a real process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc
from aimesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from aimesh_common.channels import check_health, create_channel
from aimesh_common.request_id import REQUEST_ID_METADATA
from aimesh_common.server import build_grpc_server
from aimesh_llm_router.config import Settings
from aimesh_llm_router.server import build_dependencies
from tests.common.fakes import (
    RecordingEmbedding,
    Seen,
    captured_records,
    record,
    recording_embedding,
)
from tests.conftest import free_port
from tests.llm_router.conftest import FixedRetrieval, RunningRouter, start_router, stop_router
from tests.llm_router.messages import has_content

BIN = Path(sys.executable).parent


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "AIMESH_OPENAI_API_KEY", "AIMESH_OPENAI_API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AIMESH_LLM_PROVIDER", raising=False)


async def test_auto_selects_openai_when_a_key_is_set(
    no_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-selection-test")
    deps = build_dependencies(Settings(port=0, metrics_port=None))
    try:
        model = deps.models.resolve("")
        assert model.alias == "default"
        assert model.provider.name == "openai"
        assert deps.models.resolve("fast").provider.name == "openai"
        assert deps.embedding is None
    finally:
        await deps.aclose()


async def test_auto_selects_local_without_a_key(no_key: None) -> None:
    deps = build_dependencies(Settings(port=0, metrics_port=None))
    try:
        assert deps.models.resolve("default").provider.name == "local"
        assert deps.embedding is not None
    finally:
        await deps.aclose()


async def test_console_script_serves_and_stops_on_sigterm(no_key: None) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AIMESH_PORT": str(port),
        "AIMESH_HOST": "127.0.0.1",
        "AIMESH_METRICS_PORT": str(free_port()),
        "AIMESH_LLM_PROVIDER": "local",
        "AIMESH_LOG_FORMAT": "json",
        "AIMESH_GRACE_SECONDS": "1",
    }
    process = await asyncio.create_subprocess_exec(
        str(BIN / "aimesh-llm-router"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with create_channel(f"127.0.0.1:{port}") as channel:
            for _ in range(300):  # a busy 2-core machine can take 10+ s to import
                if await check_health(channel, deadline_seconds=0.5):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the router did not become healthy")
            stub = llm_pb2_grpc.LLMRouterServiceStub(channel)
            models = await stub.ListModels(llm_pb2.ListModelsRequest())
            assert [model.id for model in models.models] == ["default", "fast"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0
    assert b'"models": {"default": "local", "fast": "local"}' in stderr


async def test_console_script_rejects_bad_settings(no_key: None) -> None:
    env = {**os.environ, "AIMESH_LLM_PROVIDER": "openai", "AIMESH_PORT": str(free_port())}
    process = await asyncio.create_subprocess_exec(
        str(BIN / "aimesh-llm-router"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 2
    assert b"AIMESH_LLM_PROVIDER" in stderr
    assert b"Traceback" not in stderr


async def test_console_script_lists_every_model_file_problem(no_key: None, tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n"
        "  default: {provider: nosuch, fallbacks: [ghost]}\n"
        "  fast: {provider: openai, model: m, api_key_env: AIMESH_TEST_UNSET_KEY}\n",
        encoding="utf-8",
    )
    env = {**os.environ, "AIMESH_MODELS_FILE": str(models), "AIMESH_PORT": str(free_port())}
    env.pop("AIMESH_TEST_UNSET_KEY", None)
    process = await asyncio.create_subprocess_exec(
        str(BIN / "aimesh-llm-router"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 2
    text = stderr.decode()
    assert "Traceback" not in text
    assert "models.default.provider: unknown provider 'nosuch'" in text
    assert "models.default.fallbacks[0]: unknown alias 'ghost'" in text
    assert "models.fast.api_key_env: environment variable AIMESH_TEST_UNSET_KEY" in text


@dataclass
class RecordingRetrieval(FixedRetrieval):
    """FixedRetrieval that also records the request id of each Search."""

    seen: list[Seen] = field(default_factory=list)

    async def Search(
        self, request: retrieval_pb2.SearchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> retrieval_pb2.SearchResponse:
        record("Search", context, self.seen)
        return await super().Search(request, context)


@dataclass
class RecordedRouter:
    router: RunningRouter
    retrieval: RecordingRetrieval
    embedding: RecordingEmbedding


@pytest.fixture
async def recorded_router() -> AsyncIterator[RecordedRouter]:
    """A local-provider router whose retrieval and embedding servers record request ids;
    its channels are the ones build_dependencies creates."""
    retrieval = RecordingRetrieval()
    retrieval.put("t1", "docs", [("paris", "Paris is the capital of France. It is big.")])
    retrieval_server = build_grpc_server(
        host="127.0.0.1",
        port=0,
        register=lambda s: retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(retrieval, s),
        service_names=["aimesh.retrieval.v1.RetrievalService"],
    )
    await retrieval_server.start()
    async with recording_embedding() as (embedding, embedding_addr):
        settings = Settings(
            port=0,
            host="127.0.0.1",
            metrics_port=None,
            llm_provider="local",
            embedding_service_addr=embedding_addr,
            retrieval_service_addr=f"127.0.0.1:{retrieval_server.port}",
        )
        router = await start_router(settings)
        yield RecordedRouter(router, retrieval, embedding)
        await stop_router(router)
    await retrieval_server.stop(0)


def _with_id(request_id: str) -> tuple[tuple[str, str]]:
    return ((REQUEST_ID_METADATA, request_id),)


def _task_done(records: list[logging.LogRecord]) -> list[str | None]:
    """The request id of each "task done" line (None when it has none)."""
    return [r.__dict__.get("request_id") for r in records if r.getMessage() == "task done"]


ANSWER = llm_pb2.AnswerRequest(
    question="What is the capital of France?", collection="docs", tenant_id="t1"
)


async def test_request_ids_reach_embedding_from_a_unary_call(
    recorded_router: RecordedRouter,
) -> None:
    stub, embedding = recorded_router.router.stub, recorded_router.embedding
    with captured_records("aimesh.llm_router") as records:
        summary = await stub.Summarize(
            llm_pb2.SummarizeRequest(
                text="Cats sleep a lot. Dogs bark at night. Birds sing.", tenant_id="t1"
            ),
            metadata=_with_id("sum-1"),
        )
    assert summary.summary
    assert [(s.method, s.sent, s.held) for s in embedding.seen] == [
        ("Info", ("sum-1",), "sum-1"),
        ("Embed", ("sum-1",), "sum-1"),
    ]
    assert _task_done(records) == ["sum-1"]


async def test_request_ids_reach_retrieval_and_embedding_from_a_stream(
    recorded_router: RecordedRouter,
) -> None:
    stub = recorded_router.router.stub
    events = [
        event
        async for event in stub.StreamAnswer(ANSWER, metadata=_with_id("ans-2"))
        if has_content(event)
    ]
    assert events[-1].HasField("done")
    assert [(s.sent, s.held) for s in recorded_router.retrieval.seen] == [(("ans-2",), "ans-2")]
    assert [(s.method, s.sent, s.held) for s in recorded_router.embedding.seen] == [
        ("Info", ("ans-2",), "ans-2"),
        ("Embed", ("ans-2",), "ans-2"),
    ]


async def test_without_a_request_id_none_is_made_up(recorded_router: RecordedRouter) -> None:
    stub = recorded_router.router.stub
    await stub.Answer(ANSWER, metadata=_with_id("first-3"))
    recorded_router.retrieval.seen.clear()
    recorded_router.embedding.seen.clear()
    with captured_records("aimesh.llm_router") as records:
        await stub.Answer(ANSWER)  # the previous call's id must not linger either
    assert [(s.sent, s.held) for s in recorded_router.retrieval.seen] == [((), None)]
    assert [(s.sent, s.held) for s in recorded_router.embedding.seen] == [((), None)]
    assert _task_done(records) == [None]
