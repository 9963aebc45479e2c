"""A client that leaves stops the work it asked for: every generating route, streamed or
not, before the first byte or mid-stream, cancels the router's task and the upstream model
call at once, and the request is recorded as 499 (not 200). The tokens spent until then are
charged once, as an estimate (the upstream had reported no counts), with their cost.

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
from sqlalchemy import select

from aimesh_gateway.db.models import UsageRecord
from aimesh_gateway.state import state_of
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import bearer, token
from tests.gateway.live_stack import Stack, real_router_stack
from tests.llm_router.openai_server import Reply

PRICES: dict[str, Any] = {"price_per_1k_input": 1.0, "price_per_1k_output": 2.0}
# The upstream polls its client every 20 ms; the rest is the cancellation travelling
# gateway -> router -> upstream. Generous for a busy 2-core CI machine.
MAX_STOP_SECONDS = 1.0


@pytest.fixture(scope="module")
async def stack(
    fake_mesh: FakeMesh, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with real_router_stack(
        fake_mesh, tmp_path_factory.mktemp("router-disconnect"), **PRICES
    ) as s:
        s.retrieval.put("acme", "kb", [("d1", "Paris is in France.")])
        yield s


def _user(request_id: str = "") -> dict[str, str]:
    headers = bearer(token("acme", ["user"], subject="ann"))
    return {**headers, "X-Request-ID": request_id} if request_id else headers


async def _usage_of(stack: Stack, request_id: str) -> list[UsageRecord]:
    """The usage records of one request, once written (they are written off the path)."""
    state = state_of(stack.app)
    rows: list[UsageRecord] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        await state.usage.drain()
        async with state.db_sessions() as session:
            found = await session.execute(
                select(UsageRecord).where(UsageRecord.request_id == request_id)
            )
            rows = list(found.scalars())
        if rows:
            await asyncio.sleep(0.05)  # a second record would show up now
            await state.usage.drain()
            async with state.db_sessions() as session:
                found = await session.execute(
                    select(UsageRecord).where(UsageRecord.request_id == request_id)
                )
                return list(found.scalars())
        await asyncio.sleep(0.02)
    return rows


def _assert_charged_estimate(rows: list[UsageRecord], *, completion: bool) -> None:
    assert len(rows) == 1, rows
    row = rows[0]
    assert row.estimated
    assert row.prompt_tokens > 0
    assert (row.completion_tokens > 0) == completion
    expected = (row.prompt_tokens * PRICES["price_per_1k_input"]) / 1000 + (
        row.completion_tokens * PRICES["price_per_1k_output"]
    ) / 1000
    assert row.cost_usd == pytest.approx(expected)


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
        request_id = f"leave-first-{case}"
        async with httpx.AsyncClient(base_url=stack.live_url, timeout=60) as leaving:
            request = asyncio.create_task(leaving.post(path, json=body, headers=_user(request_id)))
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
    # The prompt was sent to the model: it is charged, estimated, with no completion.
    _assert_charged_estimate(await _usage_of(stack, request_id), completion=False)


@pytest.mark.parametrize("case", list(CASES))
async def test_a_client_leaving_mid_stream_stops_the_upstream_and_is_not_a_200(
    stack: Stack, case: str
) -> None:
    path, body = CASES[case]
    stack.upstream.reset()
    stack.upstream.enqueue(Reply(content="one two three four five six", chunk_delay=1.0))
    request_id = f"leave-mid-{case}"
    async with httpx.AsyncClient(base_url=stack.live_url, timeout=60) as http:
        if "{id}" in path:
            path = path.format(id=await _conversation(http))
        route = (
            path if "conversations" not in path else "/v1/conversations/{conversation_id}/messages"
        )
        ok_before = await _status_count(http, route, 200)
        closed_before = await _status_count(http, route, 499)
        async with httpx.AsyncClient(base_url=stack.live_url, timeout=60) as leaving:
            if body.get("stream") or "conversations" in path:
                async with leaving.stream(
                    "POST", path, json=body, headers=_user(request_id)
                ) as reply:
                    assert reply.status_code == 200
                    async for line in reply.aiter_lines():
                        if '"content":"one' in line or '"text":"one' in line:
                            break
            else:  # not streamed: leave once the upstream has sent some tokens
                request = asyncio.create_task(
                    leaving.post(path, json=body, headers=_user(request_id))
                )
                await _wait_for(lambda: len(stack.upstream.requests) == 1)
                await asyncio.sleep(1.5)
                request.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await request
        left = time.monotonic()
        await _wait_for(lambda: stack.upstream.left_at, seconds=MAX_STOP_SECONDS + 5)
        stopped = stack.upstream.left_at[0] - left
        print(f"{case} mid-stream: upstream saw the client leave {stopped * 1000:.0f} ms after")
        assert stopped < MAX_STOP_SECONDS
        for _ in range(100):
            if await _status_count(http, route, 499) == closed_before + 1:
                break
            await asyncio.sleep(0.02)
        assert await _status_count(http, route, 499) == closed_before + 1
        assert await _status_count(http, route, 200) == ok_before
    _assert_charged_estimate(await _usage_of(stack, request_id), completion=True)


async def test_a_completed_request_is_not_cancelled_afterwards(stack: Stack) -> None:
    stack.upstream.reset()
    stack.upstream.enqueue(Reply(content="Quick answer."))
    async with httpx.AsyncClient(base_url=stack.live_url, timeout=60) as http:
        reply = await http.post("/v1/chat/completions", json=CHAT, headers=_user())
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["content"] == "Quick answer."
    await asyncio.sleep(0.2)
    assert stack.upstream.disconnects == 0
