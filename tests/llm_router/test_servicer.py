"""LLMRouterService over real gRPC: create_server on port 0, health, ListModels, alias
resolution and upstream errors. Each task family is tested in tests/llm_router/tasks/.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from aimesh.llm.v1 import llm_pb2
from aimesh_common.channels import check_health
from tests.llm_router.conftest import TEST_KEY, RunningRouter, rpc_error
from tests.llm_router.messages import has_content
from tests.llm_router.openai_server import FakeOpenAI, Reply

USAGE = {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132}


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
        [reply async for reply in openai_router.stub.Generate(request) if has_content(reply)]
    assert raised.value.code() == code
    assert TEST_KEY not in (raised.value.details() or "")
    failed = REGISTRY.get_sample_value(
        "aimesh_llm_requests_total",
        {
            "alias": "default",
            "provider": "openai",
            "task": "generate",
            "prompt_version": "none",
            "outcome": code.name,
        },
    )
    assert failed is not None
    assert failed >= 1


async def test_local_provider_models_and_generate(local_router: RunningRouter) -> None:
    models = await local_router.stub.ListModels(llm_pb2.ListModelsRequest())
    assert {model.context_window for model in models.models} == {4096}
    assert all("extractive" in model.description for model in models.models)
    labels = {
        "alias": "default",
        "provider": "local",
        "task": "generate",
        "prompt_version": "none",  # the extractive provider renders no template
        "outcome": "OK",
    }
    before = REGISTRY.get_sample_value("aimesh_llm_requests_total", labels) or 0
    request = llm_pb2.GenerateRequest(messages=[llm_pb2.ChatMessage(role="user", content="Hi")])
    replies = [reply async for reply in local_router.stub.Generate(request) if has_content(reply)]
    assert "cannot compose free text" in "".join(reply.delta for reply in replies)
    assert replies[-1].finish_reason == "stop"
    assert replies[-1].usage.estimated
    assert REGISTRY.get_sample_value("aimesh_llm_requests_total", labels) == before + 1


def _nested(levels: int) -> dict[str, object]:
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    assert isinstance(value, dict)
    return value


async def _first(stream: AsyncIterable[llm_pb2.StreamEvent]) -> llm_pb2.StreamEvent | None:
    async for item in stream:
        return item
    return None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_nested(17), "nested deeper than 16 levels"),
        ({"year": {"$gt": float("inf")}}, "filter.year.$gt is not a finite number"),
    ],
)
async def test_a_filter_past_the_limits_is_invalid_argument(
    openai_router: RunningRouter, fake_openai: FakeOpenAI, spec: dict[str, Any], message: str
) -> None:
    """The router checks an Answer's filter itself, as retrieval would, before any search
    or model call (the gateway's limits, enforced again for internal callers)."""
    request = llm_pb2.AnswerRequest(question="Where?", collection="kb", tenant_id="acme")
    request.filter.update(spec)
    for call in (
        openai_router.stub.Answer(request),
        _first(openai_router.stub.StreamAnswer(request)),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (error.details() or "")
    assert not fake_openai.requests
