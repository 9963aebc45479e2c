"""A client that leaves stops the work it asked for: every generating route, streamed or
not, before the first byte or mid-stream, cancels the router's task and the upstream model
call at once, and the request is recorded as 499 (not 200).

Real TCP to the gateway (uvicorn), real gRPC to the real router, and an OpenAI-protocol
upstream that notes when its client leaves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import bearer, token
from tests.gateway.live_stack import Stack, real_router_stack
from tests.llm_router.openai_server import Reply

# The upstream polls its client every 20 ms; the rest is the cancellation travelling
# gateway -> router -> upstream. Generous for a busy 2-core CI machine.
MAX_STOP_SECONDS = 1.0


@pytest.fixture(scope="module")
async def stack(
    fake_mesh: FakeMesh, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with real_router_stack(fake_mesh, tmp_path_factory.mktemp("router-disconnect")) as s:
        s.retrieval.put("acme", "kb", [("d1", "Paris is in France.")])
        yield s


def _user() -> dict[str, str]:
    return bearer(token("acme", ["user"], subject="ann"))


async def _conversation(http: httpx.AsyncClient) -> str:
    created = await http.post("/v1/conversations", json={}, headers=_user())
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


CHAT = {"model": "default", "messages": [{"role": "user", "content": "Take your time"}]}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", CHAT),
    "chat-stream": ("/v1/chat/completions", {**CHAT, "stream": True}),
    "ask": ("/v1/ask", {"question": "Where is Paris?", "collection": "kb"}),
    "ask-stream": ("/v1/ask", {"question": "Where is Paris?", "collection": "kb", "stream": True}),
    "summarize": ("/v1/summarize", {"text": "Cats sleep. Dogs bark."}),
    "summarize-stream": ("/v1/summarize", {"text": "Cats sleep. Dogs bark.", "stream": True}),
    "conversation": ("/v1/conversations/{id}/messages", {"content": "Tell me"}),
}


async def _status_count(http: httpx.AsyncClient, route: str, status: int) -> float:
    text = (await http.get("/metrics")).text
    prefix = f'aimesh_http_requests_total{{method="POST",route="{route}",status="{status}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


async def _wait_for(predicate: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("case", list(CASES))
async def test_a_client_leaving_before_the_first_byte_stops_the_upstream(
    stack: Stack, case: str
) -> None:
    path, body = CASES[case]
    stack.upstream.reset()
    # The upstream would take 30 s to answer at all.
    stack.upstream.enqueue(Reply(content="too late", delay=30.0))
    async with httpx.AsyncClient(base_url=stack.live_url, timeout=60) as http:
        if "{id}" in path:
            path = path.format(id=await _conversation(http))
        route = (
            path if "conversations" not in path else "/v1/conversations/{conversation_id}/messages"
        )
        before = await _status_count(http, route, 499)
        async with httpx.AsyncClient(base_url=stack.live_url, timeout=60) as leaving:
            request = asyncio.create_task(leaving.post(path, json=body, headers=_user()))
            await _wait_for(lambda: len(stack.upstream.requests) == 1)
            await asyncio.sleep(0.2)  # the upstream is now delaying its answer
            request.cancel()  # closes the connection
            left = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await request
        await _wait_for(lambda: stack.upstream.left_at, seconds=MAX_STOP_SECONDS + 5)
        stopped = stack.upstream.left_at[0] - left
        print(f"{case}: upstream saw the client leave {stopped * 1000:.0f} ms after it left")
        assert stopped < MAX_STOP_SECONDS
        await _wait_for(lambda: True)
        for _ in range(100):
            if await _status_count(http, route, 499) == before + 1:
                break
            await asyncio.sleep(0.02)
        assert await _status_count(http, route, 499) == before + 1


async def test_a_client_leaving_mid_stream_stops_the_upstream_and_is_not_a_200(
    stack: Stack,
) -> None:
    stack.upstream.reset()
    stack.upstream.enqueue(Reply(content="one two three four five six", chunk_delay=1.0))
    route = "/v1/chat/completions"
    async with httpx.AsyncClient(base_url=stack.live_url, timeout=60) as http:
        ok_before = await _status_count(http, route, 200)
        closed_before = await _status_count(http, route, 499)
        async with (
            httpx.AsyncClient(base_url=stack.live_url, timeout=60) as leaving,
            leaving.stream("POST", route, json={**CHAT, "stream": True}, headers=_user()) as reply,
        ):
            assert reply.status_code == 200
            async for line in reply.aiter_lines():
                if '"content":"one' in line:
                    break
        left = time.monotonic()
        await _wait_for(lambda: stack.upstream.left_at, seconds=MAX_STOP_SECONDS + 5)
        assert stack.upstream.left_at[0] - left < MAX_STOP_SECONDS
        for _ in range(100):
            if await _status_count(http, route, 499) == closed_before + 1:
                break
            await asyncio.sleep(0.02)
        assert await _status_count(http, route, 499) == closed_before + 1
        assert await _status_count(http, route, 200) == ok_before


async def test_a_completed_request_is_not_cancelled_afterwards(stack: Stack) -> None:
    stack.upstream.reset()
    stack.upstream.enqueue(Reply(content="Quick answer."))
    async with httpx.AsyncClient(base_url=stack.live_url, timeout=60) as http:
        reply = await http.post("/v1/chat/completions", json=CHAT, headers=_user())
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["content"] == "Quick answer."
    await asyncio.sleep(0.2)
    assert stack.upstream.disconnects == 0
