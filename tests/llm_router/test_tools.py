"""Function tools through Generate, over real gRPC against the OpenAI-protocol test server:
tools and tool messages reach the upstream as sent, the model's calls come back complete,
providers without tool support refuse them, and fallbacks skip such providers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest

from aimesh.llm.v1 import llm_pb2
from aimesh_llm_router.config import Settings
from aimesh_llm_router.providers.base import GenerateTask, Message
from aimesh_llm_router.tools import ToolCall, ToolOptions, ToolSpec
from tests.llm_router.anthropic_server import FakeAnthropic
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
from tests.llm_router.test_anthropic_provider import provider_for as anthropic_provider_for

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city"],
}
WEATHER = llm_pb2.Tool(
    name="get_weather",
    description="Current weather of a city.",
    parameters_json=json.dumps(WEATHER_SCHEMA),
)
USAGE = {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}


@pytest.fixture
async def tools_router(
    fake_openai: FakeOpenAI,
    backup_openai: FakeOpenAI,
    embedding_addr: str,
    retrieval_server: tuple[FixedRetrieval, str],
) -> AsyncIterator[RunningRouter]:
    """Aliases: ``default`` (openai, falls back to ``extractive`` then ``backup``),
    ``extractive`` (local) and ``backup`` (openai on the second server)."""
    config = models_config(
        {
            "default": openai_model(fake_openai.base_url, fallbacks=["extractive", "backup"]),
            "extractive": {"provider": "local"},
            "backup": openai_model(backup_openai.base_url, model="backup-model"),
        }
    )
    settings: Settings = openai_settings(
        fake_openai.base_url,
        retrieval_service_addr=retrieval_server[1],
        embedding_service_addr=embedding_addr,
    )
    running = await start_router(settings, config)
    yield running
    await stop_router(running)


def _request(*messages: llm_pb2.ChatMessage, **fields: object) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(model="default", messages=list(messages), **fields)  # type: ignore[arg-type]


async def _collect(
    router: RunningRouter, request: llm_pb2.GenerateRequest
) -> list[llm_pb2.GenerateResponse]:
    return [
        message
        async for message in router.stub.Generate(request, timeout=10)
        if has_content(message)
    ]


async def test_tools_reach_the_upstream_and_streamed_calls_come_back_whole(
    tools_router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    arguments = json.dumps({"city": "Paris", "unit": "c"})
    fake_openai.enqueue(
        Reply(
            content="",
            finish_reason="tool_calls",
            usage=USAGE,
            tool_calls=[
                {"id": "call_1", "name": "get_weather", "arguments": arguments},
                {"id": "call_2", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
            ],
        )
    )
    replies = await _collect(
        tools_router,
        _request(
            llm_pb2.ChatMessage(role="user", content="Weather in Paris and Oslo?"),
            tools=[WEATHER],
            tool_choice="required",
            parallel_tool_calls=True,
        ),
    )
    sent = fake_openai.requests[-1].body
    assert sent["stream"] is True
    assert sent["parallel_tool_calls"] is True
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather of a city.",
                "parameters": WEATHER_SCHEMA,
            },
        }
    ]
    assert sent["tool_choice"] == "required"
    last = replies[-1]
    assert last.finish_reason == "tool_calls"
    assert [(c.id, c.name, json.loads(c.arguments_json)) for c in last.tool_calls] == [
        ("call_1", "get_weather", {"city": "Paris", "unit": "c"}),
        ("call_2", "get_weather", {"city": "Oslo"}),
    ]
    assert all(not reply.tool_calls for reply in replies[:-1])
    assert "".join(reply.delta for reply in replies) == ""
    assert last.usage.prompt_tokens == 40
    assert last.usage.estimated is False


async def test_tool_results_are_sent_back_as_tool_messages(
    tools_router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(content="It is 18 degrees in Paris.", usage=USAGE))
    call = llm_pb2.ToolCall(id="call_1", name="get_weather", arguments_json='{"city":"Paris"}')
    replies = await _collect(
        tools_router,
        _request(
            llm_pb2.ChatMessage(role="user", content="Weather in Paris?"),
            llm_pb2.ChatMessage(role="assistant", content="", tool_calls=[call]),
            llm_pb2.ChatMessage(role="tool", content='{"celsius": 18}', tool_call_id="call_1"),
            tools=[WEATHER],
            tool_choice_name="get_weather",
        ),
    )
    assert "".join(r.delta for r in replies) == "It is 18 degrees in Paris."
    assert replies[-1].finish_reason == "stop"
    assert not replies[-1].tool_calls
    sent = fake_openai.requests[-1].body
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    # The router's system prompt first, then the conversation as the client sent it.
    assert sent["messages"][0]["role"] == "system"
    user, assistant, tool = sent["messages"][1:]
    assert user == {"role": "user", "content": "Weather in Paris?"}
    assert assistant["role"] == "assistant"
    assert [
        (c["id"], c["type"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in assistant["tool_calls"]
    ] == [("call_1", "function", "get_weather", {"city": "Paris"})]
    assert tool == {"role": "tool", "content": '{"celsius": 18}', "tool_call_id": "call_1"}


async def test_a_provider_without_tools_refuses_them(tools_router: RunningRouter) -> None:
    requests = [
        _request(llm_pb2.ChatMessage(role="user", content="hi"), tools=[WEATHER]),
        _request(
            llm_pb2.ChatMessage(role="user", content="hi"),
            llm_pb2.ChatMessage(
                role="assistant",
                tool_calls=[llm_pb2.ToolCall(id="c", name="get_weather", arguments_json="{}")],
            ),
            llm_pb2.ChatMessage(role="tool", content="sunny", tool_call_id="c"),
        ),
    ]
    for request in requests:
        request.model = "extractive"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _collect(tools_router, request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "model 'extractive' does not support tools" in (caught.value.details() or "")


async def test_the_fallback_chain_skips_aliases_without_tools(
    tools_router: RunningRouter, fake_openai: FakeOpenAI, backup_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply(status=503))
    backup_openai.enqueue(
        Reply(
            content="",
            tool_calls=[{"id": "call_9", "name": "get_weather", "arguments": '{"city":"Rome"}'}],
            finish_reason="tool_calls",
        )
    )
    replies = await _collect(
        tools_router,
        _request(llm_pb2.ChatMessage(role="user", content="Rome?"), tools=[WEATHER]),
    )
    assert replies[-1].model == "backup"
    assert [c.name for c in replies[-1].tool_calls] == ["get_weather"]
    assert backup_openai.requests[-1].body["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("fields", "messages", "expected"),
    [
        ({"tools": [llm_pb2.Tool(name="bad name")]}, None, "tools[0].name"),
        (
            {"tools": [llm_pb2.Tool(name="f", parameters_json="[1]")]},
            None,
            "tools[0].parameters_json must be a JSON object",
        ),
        (
            {"tools": [llm_pb2.Tool(name="f", parameters_json='{"a": ' * 40 + "1" + "}" * 40)]},
            None,
            "a.a.a: nested deeper than 32 levels",
        ),
        (
            {"tools": [llm_pb2.Tool(name="f", parameters_json="[" * 100_000 + "]" * 100_000)]},
            None,
            "tools[0].parameters_json: nested deeper than 32 levels",
        ),
        (
            {"tools": [llm_pb2.Tool(name="f", parameters_json='{"max": NaN}')]},
            None,
            "tools[0].parameters_json: NaN is not JSON",
        ),
        (
            {"tools": [llm_pb2.Tool(name="f", parameters_json='{"n": 99999999999999999999}')]},
            None,
            "tools[0].parameters_json.n: integer out of range",
        ),
        ({"tools": [WEATHER, WEATHER]}, None, "given twice"),
        ({"tools": [WEATHER], "tool_choice": "always"}, None, "tool_choice must be"),
        ({"tools": [WEATHER], "tool_choice_name": "other"}, None, "not a tool"),
        ({"tool_choice": "auto"}, None, "tool_choice needs tools"),
        ({"parallel_tool_calls": True}, None, "parallel_tool_calls needs tools"),
        (
            {},
            [
                llm_pb2.ChatMessage(role="user", content="hi"),
                llm_pb2.ChatMessage(role="tool", content="x"),
            ],
            "tool_call_id",
        ),
        (
            {},
            [
                llm_pb2.ChatMessage(
                    role="user",
                    content="hi",
                    tool_calls=[llm_pb2.ToolCall(id="c", name="f", arguments_json="{}")],
                )
            ],
            "only assistant messages call tools",
        ),
        (
            {},
            [
                llm_pb2.ChatMessage(role="user", content="hi"),
                llm_pb2.ChatMessage(
                    role="assistant",
                    tool_calls=[llm_pb2.ToolCall(id="c", name="f", arguments_json="{oops")],
                ),
                llm_pb2.ChatMessage(role="tool", content="x", tool_call_id="c"),
            ],
            "messages[1].tool_calls[0].arguments_json must be JSON text",
        ),
    ],
)
async def test_bad_tool_requests_are_invalid_argument(
    tools_router: RunningRouter,
    fields: dict[str, object],
    messages: list[llm_pb2.ChatMessage] | None,
    expected: str,
) -> None:
    request = _request(
        *(messages or [llm_pb2.ChatMessage(role="user", content="hi")]),
        **fields,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _collect(tools_router, request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (caught.value.details() or "")


@pytest.fixture
async def anthropic_server() -> AsyncIterator[FakeAnthropic]:
    server = FakeAnthropic()
    await server.start()
    yield server
    await server.stop()


async def test_anthropic_gets_tools_in_its_format_and_tool_use_comes_back(
    anthropic_server: FakeAnthropic,
) -> None:
    anthropic_server.enqueue(
        Reply(
            content="Let me look.",
            finish_reason="tool_calls",
            usage=USAGE,
            tool_calls=[{"id": "toolu_1", "name": "get_weather", "arguments": '{"city": "Lyon"}'}],
        ),
        Reply(content="Sunny.", usage=USAGE),
    )
    provider = anthropic_provider_for(anthropic_server)
    tools = ToolOptions(
        (ToolSpec("get_weather", "Weather.", WEATHER_SCHEMA),), "required", parallel=False
    )
    first = GenerateTask([Message("user", "Weather in Lyon?")], 100, None, tools)
    deltas = [delta async for delta in provider.generate(first)]
    assert "".join(d.text for d in deltas) == "Let me look."
    assert deltas[-1].finish_reason == "tool_calls"
    assert deltas[-1].tool_calls == (ToolCall("toolu_1", "get_weather", '{"city": "Lyon"}'),)
    sent = anthropic_server.requests[-1].body
    assert sent["tools"] == [
        {"name": "get_weather", "description": "Weather.", "input_schema": WEATHER_SCHEMA}
    ]
    # parallel_tool_calls=False in Anthropic's terms.
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}

    answer = GenerateTask(
        [
            Message("user", "Weather in Lyon?"),
            Message("assistant", "Let me look.", tool_calls=deltas[-1].tool_calls),
            Message("tool", '{"sky": "clear"}', tool_call_id="toolu_1"),
        ],
        100,
        None,
        ToolOptions((ToolSpec("get_weather", "Weather.", WEATHER_SCHEMA),), "none"),
    )
    assert "".join([d.text async for d in provider.generate(answer)]) == "Sunny."
    sent = anthropic_server.requests[-1].body
    assert sent["tool_choice"] == {"type": "none"}
    assistant, result = sent["messages"][-2:]
    assert {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "get_weather",
        "input": {"city": "Lyon"},
    } in [
        {k: block.get(k) for k in ("type", "id", "name", "input")}
        for block in assistant["content"]
        if block["type"] == "tool_use"
    ]
    assert result["role"] == "user"
    assert [
        (block["type"], block["tool_use_id"], block["content"]) for block in result["content"]
    ] == [("tool_result", "toolu_1", '{"sky": "clear"}')]


async def test_a_tool_message_must_answer_an_earlier_call(tools_router: RunningRouter) -> None:
    request = _request(
        llm_pb2.ChatMessage(role="user", content="hi"),
        llm_pb2.ChatMessage(role="tool", content="sunny", tool_call_id="never-made"),
        tools=[WEATHER],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _collect(tools_router, request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "answers tool call 'never-made', which no earlier" in (caught.value.details() or "")
