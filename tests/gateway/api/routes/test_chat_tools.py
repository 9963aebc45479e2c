"""Function tools through /v1/chat/completions with the official OpenAI SDK.

The full path is real: the SDK over TCP -> the gateway (uvicorn) -> the real llm-router over
gRPC -> an OpenAI-protocol test server standing in for the hosted model, which records what
it received and answers with scripted tool calls.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import user
from tests.gateway.live_stack import gateway_on_router
from tests.llm_router.openai_server import FakeOpenAI, Reply

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
USAGE = {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}


@dataclass
class ToolMesh:
    upstream: FakeOpenAI
    url: str


@pytest.fixture(scope="module")
async def tool_mesh(fake_mesh: FakeMesh) -> AsyncIterator[ToolMesh]:
    """A real router (aliases ``default``: openai on the test server, ``extractive``: local)
    behind a gateway served by uvicorn."""
    upstream = FakeOpenAI()
    await upstream.start()
    async with gateway_on_router(
        fake_mesh,
        {
            "models": {
                "default": {
                    "provider": "openai",
                    "model": "test-model",
                    "base_url": upstream.base_url,
                    "timeout_seconds": 5,
                    "max_retries": 0,
                },
                "extractive": {"provider": "local"},
            }
        },
    ) as url:
        yield ToolMesh(upstream, url)
    await upstream.stop()


@pytest.fixture
async def sdk(tool_mesh: ToolMesh) -> AsyncIterator[openai.AsyncOpenAI]:
    tool_mesh.upstream.reset()
    key = user("tools-t")["Authorization"].removeprefix("Bearer ")
    client = openai.AsyncOpenAI(base_url=f"{tool_mesh.url}/v1", api_key=key, max_retries=0)
    async with client:
        yield client


def _calls(reply: Reply) -> Reply:
    reply.finish_reason = "tool_calls"
    reply.usage = USAGE
    return reply


QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Weather in Paris?"}]


async def test_a_tool_call_comes_back_in_the_openai_shape(
    sdk: openai.AsyncOpenAI, tool_mesh: ToolMesh
) -> None:
    tool_mesh.upstream.enqueue(
        _calls(
            Reply(
                content="",
                tool_calls=[
                    {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
                ],
            )
        )
    )
    completion = await sdk.chat.completions.create(
        model="default", messages=QUESTION, tools=[WEATHER], tool_choice="auto"
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id == "call_1"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert completion.usage is not None
    assert completion.usage.total_tokens == 39
    sent = tool_mesh.upstream.requests[-1].body
    assert sent["tools"] == [WEATHER]
    assert sent["tool_choice"] == "auto"
    assert "parallel_tool_calls" not in sent  # unset: the provider's default
    assert sent["messages"][-1] == {"role": "user", "content": "Weather in Paris?"}


async def test_the_tool_result_round_trip_reaches_the_upstream_as_sent(
    sdk: openai.AsyncOpenAI, tool_mesh: ToolMesh
) -> None:
    tool_mesh.upstream.enqueue(Reply(content="18 degrees and sunny.", usage=USAGE))
    conversation: list[ChatCompletionMessageParam] = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 18}'},
    ]
    completion = await sdk.chat.completions.create(
        model="default",
        messages=conversation,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    assert completion.choices[0].message.content == "18 degrees and sunny."
    assert completion.choices[0].finish_reason == "stop"
    assert not completion.choices[0].message.tool_calls
    sent = tool_mesh.upstream.requests[-1].body
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    user_msg, assistant, tool = sent["messages"][-3:]
    assert user_msg == {"role": "user", "content": "Weather in Paris?"}
    assert [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in assistant["tool_calls"]
    ] == [("call_1", "get_weather", {"city": "Paris"})]
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 18}'}


async def test_streamed_tool_calls_arrive_as_delta_tool_calls(
    sdk: openai.AsyncOpenAI, tool_mesh: ToolMesh
) -> None:
    tool_mesh.upstream.enqueue(
        _calls(
            Reply(
                content="",
                tool_calls=[
                    {"id": "call_a", "name": "get_weather", "arguments": '{"city": "Paris"}'},
                    {"id": "call_b", "name": "get_weather", "arguments": '{"city": "Rome"}'},
                ],
            )
        )
    )
    stream = await sdk.chat.completions.create(
        model="default",
        messages=QUESTION,
        tools=[WEATHER],
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for piece in choice.delta.tool_calls or ():
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += piece.id or ""
                if piece.function is not None:
                    call["name"] += piece.function.name or ""
                    call["arguments"] += piece.function.arguments or ""
    assert finish == "tool_calls"
    assert [
        (calls[i]["id"], calls[i]["name"], json.loads(calls[i]["arguments"])) for i in sorted(calls)
    ] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_weather", {"city": "Rome"}),
    ]
    assert usage is not None
    assert usage.total_tokens == 39
    sent = tool_mesh.upstream.requests[-1].body
    assert sent["stream"] is True
    assert sent["tools"] == [WEATHER]


async def test_models_without_tool_support_answer_400(
    sdk: openai.AsyncOpenAI, tool_mesh: ToolMesh
) -> None:
    for model in ("extractive", "rag:handbook"):
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(model=model, messages=QUESTION, tools=[WEATHER])
        assert f"model '{model}' does not support tools" in caught.value.message
        assert caught.value.type == "invalid_request_error"
    assert tool_mesh.upstream.requests == []


async def test_malformed_tool_input_is_422(tool_mesh: ToolMesh) -> None:
    bad_bodies: list[dict[str, Any]] = [
        {"tools": [{"type": "retrieval"}]},
        {"tools": [{"type": "function", "function": {"name": "has space"}}]},
        {"tool_choice": "auto"},
        {"parallel_tool_calls": False},
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"messages": [*QUESTION, {"role": "tool", "content": "x", "tool_call_id": "unmade"}]},
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "["}}
                    ],
                }
            ]
        },
    ]
    async with httpx.AsyncClient(base_url=tool_mesh.url) as http:
        for extra in bad_bodies:
            body = {"model": "default", "messages": QUESTION, **extra}
            response = await http.post("/v1/chat/completions", json=body, headers=user("tools-t"))
            assert response.status_code == 422, (extra, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
    assert tool_mesh.upstream.requests == []
