"""Generate over real gRPC against the OpenAI-protocol test server: streaming, the
max_tokens cap, and request validation."""

from __future__ import annotations

import json

import grpc
import pytest

from aimesh.llm.v1 import llm_pb2
from tests.llm_router.conftest import RunningRouter
from tests.llm_router.messages import has_content
from tests.llm_router.openai_server import FakeOpenAI, Reply

USAGE = {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132}


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
    replies = [reply async for reply in openai_router.stub.Generate(request) if has_content(reply)]
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
        [reply async for reply in openai_router.stub.Generate(request) if has_content(reply)]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (raised.value.details() or "")


async def test_generate_rejects_out_of_range_temperature(openai_router: RunningRouter) -> None:
    request = llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role="user", content="hi")], temperature=2.5
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        [reply async for reply in openai_router.stub.Generate(request) if has_content(reply)]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "temperature must be between 0 and 2" in (raised.value.details() or "")


SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


async def test_a_json_schema_response_format_reaches_the_openai_upstream(
    openai_router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content='{"city": "Paris"}', usage=USAGE))
    request = llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role="user", content="Capital of France?")],
        response_format_json=json.dumps(SCHEMA),
    )
    replies = [reply async for reply in openai_router.stub.Generate(request)]
    assert json.loads("".join(reply.delta for reply in replies)) == {"city": "Paris"}
    assert fake_openai.requests[-1].body["response_format"] == SCHEMA


@pytest.mark.parametrize(
    ("response_format", "message"),
    [
        ("[1]", "response_format must be a JSON object"),
        ('{"type": "xml"}', "response_format.type must be text, json_object or json_schema"),
        ('{"type": "json_schema", "json_schema": {}}', "response_format.json_schema needs a name"),
    ],
)
async def test_invalid_response_formats_are_refused(
    openai_router: RunningRouter, response_format: str, message: str
) -> None:
    request = llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role="user", content="hi")],
        response_format_json=response_format,
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        [reply async for reply in openai_router.stub.Generate(request)]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (raised.value.details() or "")


async def test_a_provider_without_response_formats_refuses_one(
    local_router: RunningRouter,
) -> None:
    request = llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role="user", content="hi")],
        response_format_json=json.dumps(SCHEMA),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        [reply async for reply in local_router.stub.Generate(request)]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not support a JSON response format" in (raised.value.details() or "")
