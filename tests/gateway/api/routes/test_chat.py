"""POST /v1/chat/completions: OpenAI shape, SSE streaming, and the official SDK."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from aimesh_common.errors import Unavailable
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import ADMIN_KEY, assert_problem, token, user

CHAT = "/v1/chat/completions"


def _messages(text: str = "Say hello to the world") -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


async def test_completion_in_openai_shape(client: httpx.AsyncClient, fake_mesh: FakeMesh) -> None:
    response = await client.post(
        CHAT, json={"model": "default", "messages": _messages()}, headers=user("chat-t")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert len(body["id"]) > 20
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["created"] > 1_700_000_000
    assert body["model"] == "default"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: Say hello to the world"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}
    sent = fake_mesh.router.recorder.last("Generate")
    assert sent.tenant_id == "chat-t"
    assert [(m.role, m.content) for m in sent.request.messages] == [
        ("system", "Be brief."),
        ("user", "Say hello to the world"),
    ]
    assert sent.request.max_tokens == 0
    assert not sent.request.HasField("temperature")


async def test_limits_temperature_roles_and_content_parts(
    client: httpx.AsyncClient, fake_mesh: FakeMesh
) -> None:
    response = await client.post(
        CHAT,
        json={
            "model": "fast",
            "messages": [
                {"role": "developer", "content": "Rules."},
                {"role": "assistant", "content": None},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "one two "},
                        {"type": "text", "text": "three"},
                    ],
                },
            ],
            "max_tokens": 50,
            "max_completion_tokens": 2,
            "temperature": 0.5,
            # Fields OpenAI clients send that aimesh has no use for are ignored.
            "user": "someone",
            "seed": 7,
            "presence_penalty": 0.1,
            "tools": [{"type": "function", "function": {"name": "f"}}],
        },
        headers=user(),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "fast"
    assert body["choices"][0]["message"]["content"] == "echo: one"
    assert body["choices"][0]["finish_reason"] == "length"
    sent = fake_mesh.router.recorder.last("Generate").request
    assert [(m.role, m.content) for m in sent.messages] == [
        ("system", "Rules."),
        ("assistant", ""),
        ("user", "one two three"),
    ]
    assert sent.max_tokens == 2
    assert sent.temperature == pytest.approx(0.5)


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"model": "default"},
        {"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        {"messages": [{"role": "user", "content": "hi"}], "n": 2},
        {"messages": [{"role": "user", "content": "hi"}], "temperature": 2.5},
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
    ],
)
async def test_invalid_chat_is_422(client: httpx.AsyncClient, body: object) -> None:
    assert_problem(await client.post(CHAT, json=body, headers=user()), 422)


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    for stream in (False, True):
        response = await client.post(
            CHAT,
            json={"model": "gpt-9", "messages": _messages(), "stream": stream},
            headers=user(),
        )
        assert "gpt-9" in assert_problem(response, 404)["detail"]


def _events(text: str) -> list[str]:
    assert text.endswith("\n\n")
    events = [block for block in text.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events)
    return [block.removeprefix("data: ") for block in events]


async def test_streaming_as_openai_sse(client: httpx.AsyncClient) -> None:
    async with client.stream(
        "POST",
        CHAT,
        json={
            "messages": _messages("a b c"),
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers=user(),
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"]
        text = (await response.aread()).decode()
    events = _events(text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(
        chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk["choices"]
    )
    assert content == "echo: a b c"
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finishing] == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


async def test_streaming_without_usage_option_sends_no_usage_chunk(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        CHAT, json={"messages": _messages("x"), "stream": True}, headers=user()
    )
    chunks = [json.loads(e) for e in _events(response.text)[:-1]]
    assert all(chunk["choices"] for chunk in chunks)
    assert all("usage" not in chunk for chunk in chunks)


async def test_error_after_streaming_began_is_an_error_event(
    failing_client: httpx.AsyncClient, fake_mesh: FakeMesh
) -> None:
    fake_mesh.failing.stream_before_error = ["partial", " reply"]
    fake_mesh.failing.error = Unavailable("provider at 10.9.9.9 went away")
    try:
        response = await failing_client.post(
            CHAT, json={"messages": _messages(), "stream": True}, headers=user()
        )
    finally:
        fake_mesh.failing.stream_before_error = []
    assert response.status_code == 200
    events = _events(response.text)
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["type"] == "api_error"  # OpenAI's error object, as the SDK reads it
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert "unavailable" in last["error"]["message"]
    assert "10.9.9.9" not in response.text
    contents = [json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]]
    assert "".join(contents) == "partial reply"


@pytest.fixture
def live_url(live_gateway: str) -> str:
    """The gateway over TCP, as the SDK talks to it."""
    return live_gateway


def _sdk(live_url: str, credential: str = ADMIN_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{live_url}/v1", api_key=credential, max_retries=0)


async def test_openai_sdk_chat_completion(live_url: str) -> None:
    async with _sdk(live_url) as sdk:
        completion = await sdk.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Say hello."}]
        )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "echo: Say hello."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == 5


async def test_openai_sdk_streaming(live_url: str) -> None:
    async with _sdk(live_url, token(roles=["user"])) as sdk:
        stream = await sdk.chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "stream me please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        usage = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
    assert "".join(parts) == "echo: stream me please"
    assert usage is not None
    assert usage.completion_tokens == 4


async def test_openai_sdk_models_and_errors(live_url: str) -> None:
    async with _sdk(live_url) as sdk:
        assert [model.id async for model in sdk.models.list()] == ["default", "fast"]
        with pytest.raises(openai.NotFoundError):
            await sdk.chat.completions.create(
                model="gpt-9", messages=[{"role": "user", "content": "hi"}]
            )
    async with _sdk(live_url, "not-the-key-0123456789") as bad:
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()


async def test_stop_sequences_reach_the_router(
    client: httpx.AsyncClient, fake_mesh: FakeMesh
) -> None:
    for stop, expected in (("END", ["END"]), (["\n\n", "User:"], ["\n\n", "User:"]), (None, [])):
        body: dict[str, Any] = {"model": "default", "messages": _messages(), "user": "u-42"}
        if stop is not None:
            body["stop"] = stop
        response = await client.post(CHAT, json=body, headers=user())
        assert response.status_code == 200, response.text
        assert list(fake_mesh.router.recorder.last("Generate").request.stop) == expected


@pytest.mark.parametrize(
    ("stop", "reason"),
    [
        (["a", "b", "c", "d", "e"], "at most 4 stop sequences"),
        ([""], "1 to 200 characters"),
        ("x" * 201, "1 to 200 characters"),
    ],
)
async def test_bad_stop_sequences_are_422(
    client: httpx.AsyncClient, stop: Any, reason: str
) -> None:
    response = await client.post(
        CHAT, json={"model": "default", "messages": _messages(), "stop": stop}, headers=user()
    )
    assert response.status_code == 422
    assert reason in response.text
