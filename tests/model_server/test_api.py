"""The OpenAI chat-completions protocol of the model server, on both engines."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from aimesh_model_server.metrics import REQUESTS
from tests.model_server.conftest import MODEL, ServerFactory, until

ENGINES = ["openvino-genai", "onnxruntime-genai", "transformers"]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# A reply that takes the tiny model seconds (8,000 tokens, never ended early by its random
# weights; its context is 8,192): a client leaving right after it starts is always early.
LONG = {"max_tokens": 8000, "min_tokens": 8000}
LONG_CONTEXT = {"context_tokens": 8192}


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": QUESTION, "max_tokens": 24, **extra}


async def _events(response: httpx.Response) -> list[dict[str, Any]]:
    events = []
    async for line in response.aiter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line[len("data: ") :]))
    return events


async def _wait_idle(server: Any) -> None:
    """The engine has stopped every generation (within 5 s)."""
    await until(lambda: not server.engine._running and not server.engine._waiting, 5.0)


@pytest.mark.parametrize("engine", ENGINES)
async def test_completion_counts_tokens_exactly(model_server: ServerFactory, engine: str) -> None:
    async with model_server(engine) as server, server.client() as client:
        response = await client.post("/v1/chat/completions", json=_body())
        assert response.status_code == 200, response.text
        body = response.json()
        prompt = server.engine.encode_chat(QUESTION)
        assert body["object"] == "chat.completion"
        assert body["model"] == MODEL
        choice = body["choices"][0]
        assert choice["message"]["role"] == "assistant"
        usage = body["usage"]
        assert usage["prompt_tokens"] == len(prompt)
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        if choice["finish_reason"] == "length":
            assert usage["completion_tokens"] == 24
        else:
            assert 0 < usage["completion_tokens"] <= 24


@pytest.mark.parametrize("engine", ENGINES)
async def test_stream_equals_whole_reply(model_server: ServerFactory, engine: str) -> None:
    async with model_server(engine) as server, server.client() as client:
        whole = (await client.post("/v1/chat/completions", json=_body())).json()
        body = _body(stream=True, stream_options={"include_usage": True})
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = await _events(response)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == whole["choices"][0]["message"]["content"]  # greedy: the same tokens
    finish = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
    assert finish[-1] == whole["choices"][0]["finish_reason"]
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == whole["usage"]


async def test_engines_agree_on_greedy_output(model_server: ServerFactory) -> None:
    replies = []
    for engine in ENGINES:
        async with model_server(engine) as server, server.client() as client:
            body = _body(max_tokens=8)
            replies.append((await client.post("/v1/chat/completions", json=body)).json())
    *engines, reference = replies
    for reply in engines:
        assert reply["usage"]["prompt_tokens"] == reference["usage"]["prompt_tokens"]
        # int8/int4 weights against float32: the first tokens of a greedy reply agree.
        assert (
            reply["choices"][0]["message"]["content"][:3]
            == reference["choices"][0]["message"]["content"][:3]
        )


@pytest.mark.parametrize("engine", ENGINES)
async def test_stop_string_cuts_the_reply(model_server: ServerFactory, engine: str) -> None:
    async with model_server(engine) as server, server.client() as client:
        free = (await client.post("/v1/chat/completions", json=_body(max_tokens=40))).json()
        text = free["choices"][0]["message"]["content"]
        assert len(text) > 12, text
        stop = text[len(text) // 2 : len(text) // 2 + 3]
        cut = text.index(stop)
        for stream in (False, True):
            body = _body(max_tokens=40, stop=[stop, "never-said"], stream=stream)
            if stream:
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    events = await _events(response)
                reply = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
                finish = events[-1]["choices"][0]["finish_reason"]
            else:
                answer = (await client.post("/v1/chat/completions", json=body)).json()
                reply = answer["choices"][0]["message"]["content"]
                finish = answer["choices"][0]["finish_reason"]
            assert reply == text[:cut]
            assert stop not in reply
            assert finish == "stop"


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"messages": []}, 400, "messages"),
        ({"n": 2}, 400, "n"),
        ({"max_tokens": 0}, 400, "max_tokens"),
        ({"temperature": 3}, 400, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role"),
        ({"model": "gpt-4o"}, 404, "model"),
        ({"messages": [{"role": "user", "content": "word " * 5000}]}, 400, "messages"),
    ],
)
async def test_bad_input_is_a_clear_4xx(
    model_server: ServerFactory, change: dict[str, Any], status: int, param: str
) -> None:
    async with model_server(context_tokens=1024) as server, server.client() as client:
        response = await client.post("/v1/chat/completions", json=_body(**change))
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["param"] == param
        assert error["message"]
        assert not server.engine._running


@pytest.mark.parametrize("engine", ENGINES)
async def test_min_tokens_keeps_the_turn_open(model_server: ServerFactory, engine: str) -> None:
    """vLLM's min_tokens: the model's end of turn is not taken before that many tokens."""
    async with model_server(engine) as server, server.client() as client:
        body = _body(max_tokens=60, min_tokens=60)
        reply = (await client.post("/v1/chat/completions", json=body)).json()
        assert reply["usage"]["completion_tokens"] == 60
        assert reply["choices"][0]["finish_reason"] == "length"


async def test_huge_max_tokens_is_clamped_to_the_context(model_server: ServerFactory) -> None:
    async with model_server(context_tokens=96) as server, server.client() as client:
        response = await client.post("/v1/chat/completions", json=_body(max_tokens=10**12))
        assert response.status_code == 200, response.text
        usage = response.json()["usage"]
        assert usage["total_tokens"] <= 96


async def test_full_server_answers_429_at_once(model_server: ServerFactory) -> None:
    async with (
        model_server(max_batch_size=1, max_queue=0, **LONG_CONTEXT) as server,
        server.client() as client,
    ):
        body = _body(**LONG, stream=True)
        async with client.stream("POST", "/v1/chat/completions", json=body) as busy:
            lines = busy.aiter_lines()  # kept: a dropped line iterator closes the response
            await lines.__anext__()
            response = await client.post("/v1/chat/completions", json=_body())
            assert response.status_code == 429
            assert response.json()["error"]["code"] == "overloaded"
            # Answered while the other request still generates: not queued behind it.
            assert server.engine._running
        await _wait_idle(server)


@pytest.mark.parametrize("engine", ENGINES)
async def test_client_leaving_a_stream_stops_generation(
    model_server: ServerFactory, engine: str
) -> None:
    async with model_server(engine, **LONG_CONTEXT) as server, server.client() as client:
        async with client.stream(
            "POST", "/v1/chat/completions", json=_body(**LONG, stream=True)
        ) as response:
            lines = response.aiter_lines()
            await lines.__anext__()
        await _wait_idle(server)


async def test_client_leaving_before_its_turn_frees_its_place(model_server: ServerFactory) -> None:
    async with (
        model_server(max_batch_size=1, max_queue=4, **LONG_CONTEXT) as server,
        server.client() as client,
    ):
        body = _body(**LONG, stream=True)
        async with client.stream("POST", "/v1/chat/completions", json=body) as busy:
            lines = busy.aiter_lines()  # kept: a dropped line iterator closes the response
            await lines.__anext__()
            waiting = asyncio.create_task(client.post("/v1/chat/completions", json=body))
            await until(lambda: bool(server.engine._waiting))
            waiting.cancel()
            await until(lambda: not server.engine._waiting)
        await _wait_idle(server)


@pytest.mark.parametrize("engine", ENGINES)
async def test_client_leaving_a_whole_reply_stops_generation(
    model_server: ServerFactory, engine: str
) -> None:
    cancelled = REQUESTS.labels("cancelled")
    before = cancelled._value.get()
    async with model_server(engine, **LONG_CONTEXT) as server, server.client() as client:
        waiting = asyncio.create_task(client.post("/v1/chat/completions", json=_body(**LONG)))
        await until(lambda: bool(server.engine._running))
        waiting.cancel()  # the client closes its connection before the reply is complete
        await _wait_idle(server)
        assert cancelled._value.get() == before + 1


async def test_models_and_health(model_server: ServerFactory) -> None:
    async with model_server() as server, server.client() as client:
        models = (await client.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == [MODEL]
        assert (await client.get("/health")).status_code == 200
        await client.post("/v1/chat/completions", json=_body(max_tokens=4))
        text = (await client.get("/metrics")).text
        assert 'aimesh_model_requests_total{outcome="ok"}' in text
        assert 'aimesh_model_tokens_total{kind="prompt"}' in text
