"""Fallbacks seen by a client of /v1/chat/completions (issue 19 §2).

The full path is real: the OpenAI SDK over TCP -> the gateway (uvicorn) -> the real llm-router
over gRPC -> two OpenAI-protocol test servers. The alias ``default`` (chain ``[default,
fast]``) is on one that misbehaves; ``fast`` is on one that answers. Each kind of failure
before the first token gives the client ``fast``'s answer, streamed or not; a failure after
the first token ends the stream with an error event, which the SDK raises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import user
from tests.gateway.live_stack import gateway_on_router
from tests.llm_router.openai_server import FakeOpenAI, Reply

MISBEHAVIOURS = {
    "connection reset mid-body": Reply(content="cut off", reset_mid_body=True),
    "200 with an HTML body": Reply(raw="<html>Bad gateway</html>", raw_content_type="text/html"),
    "200 with JSON of the wrong schema": Reply(raw='{"unexpected": true}'),
    "HTTP 503": Reply(status=503),
    "HTTP 429": Reply(status=429),
}


@dataclass
class ChainMesh:
    upstream: FakeOpenAI
    fast: FakeOpenAI
    url: str


@pytest.fixture(scope="module")
async def chain_mesh(fake_mesh: FakeMesh) -> AsyncIterator[ChainMesh]:
    upstream, fast = FakeOpenAI(), FakeOpenAI()
    for server in (upstream, fast):
        await server.start()

    def alias(server: FakeOpenAI, **more: object) -> dict[str, object]:
        return {
            "provider": "openai",
            "model": "test-model",
            "base_url": server.base_url,
            "timeout_seconds": 2,
            "max_retries": 0,
            **more,
        }

    async with gateway_on_router(
        fake_mesh,
        {
            "models": {
                "default": alias(upstream, fallbacks=["fast"], deadline_seconds=8),
                "fast": alias(fast),
            },
            "retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.05},
            "circuit_breaker": {"failure_threshold": 1000, "cooldown_seconds": 60},
        },
    ) as url:
        yield ChainMesh(upstream, fast, url)
    for server in (upstream, fast):
        await server.stop()


@pytest.fixture
async def sdk(chain_mesh: ChainMesh) -> AsyncIterator[openai.AsyncOpenAI]:
    chain_mesh.upstream.reset()
    chain_mesh.fast.reset()
    key = user("fallback-t")["Authorization"].removeprefix("Bearer ")
    client = openai.AsyncOpenAI(base_url=f"{chain_mesh.url}/v1", api_key=key, max_retries=0)
    async with client:
        yield client


@pytest.mark.parametrize("kind", list(MISBEHAVIOURS))
async def test_the_client_gets_the_next_models_answer(
    sdk: openai.AsyncOpenAI, chain_mesh: ChainMesh, kind: str
) -> None:
    chain_mesh.upstream.always = MISBEHAVIOURS[kind]
    chain_mesh.fast.enqueue(Reply(content="an answer from fast"), Reply(content="streamed by fast"))
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]
    completion = await sdk.chat.completions.create(model="default", messages=messages)
    assert completion.choices[0].message.content == "an answer from fast"
    assert completion.model == "fast"
    stream = await sdk.chat.completions.create(model="default", messages=messages, stream=True)
    chunks = [chunk async for chunk in stream]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "streamed by fast"
    assert {chunk.model for chunk in chunks} == {"fast"}
    assert len(chain_mesh.upstream.requests) == 2


async def test_a_failure_after_the_first_token_ends_the_stream_with_an_error(
    sdk: openai.AsyncOpenAI, chain_mesh: ChainMesh
) -> None:
    chain_mesh.upstream.enqueue(Reply(content="one two three four", break_after=2))
    stream = await sdk.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    received: list[str] = []

    async def read_all() -> None:
        async for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError):
        await read_all()
    assert "".join(received) == "one two "
    assert not chain_mesh.fast.requests, "a started stream must not switch models"


async def test_when_every_model_is_rate_limited_the_client_gets_the_providers_retry_after(
    chain_mesh: ChainMesh,
) -> None:
    """The provider's Retry-After reaches the client (not the gateway's own 1 s), so a
    client backs off as long as the provider asked."""
    chain_mesh.upstream.reset()
    chain_mesh.fast.reset()
    limited = Reply(status=429, headers={"Retry-After": "7"})
    chain_mesh.upstream.always = limited
    chain_mesh.fast.always = limited
    body = {"model": "default", "messages": [{"role": "user", "content": "Hi"}]}
    async with httpx.AsyncClient(base_url=chain_mesh.url, timeout=30) as http:
        reply = await http.post("/v1/chat/completions", json=body, headers=user("fallback-t"))
    assert reply.status_code == 429, reply.text
    assert reply.headers["retry-after"] == "7"
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert len(chain_mesh.fast.requests) == 1  # the fallback was tried first
