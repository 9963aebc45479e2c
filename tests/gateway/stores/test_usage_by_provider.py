"""Usage is charged once and exactly, or flagged as an estimate, whatever answers and however
the call ends (issue 23 §3): every provider, streamed or not, completed, cancelled by the
client mid-reply, or failed upstream after some tokens; through Chat Completions, the
Responses API and aimesh's own summarize (a non-streamed one too: the gateway calls the
router streamed and gathers the reply, so a client that leaves is charged what was spent).

Real TCP to the gateway, real gRPC to the real router, and real local HTTP servers speaking
each provider's protocol (OpenAI, Anthropic's Messages API, TGI's Messages API for the
Hugging Face provider). The local extractive provider (word estimates, always flagged) is
left out: it answers at once, so it cannot be cancelled mid-reply, and building it costs
20 s here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from aimesh_gateway.db.models import UsageRecord
from aimesh_gateway.state import state_of
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import bearer, token
from tests.gateway.live_stack import Stack, real_router_stack
from tests.llm_router.anthropic_server import FakeAnthropic
from tests.llm_router.openai_server import FakeOpenAI, Reply
from tests.llm_router.test_huggingface_provider import FakeTGI

PRICES: dict[str, Any] = {"price_per_1k_input": 1.0, "price_per_1k_output": 2.0}
REPORTED = {"prompt_tokens": 17, "completion_tokens": 6}
CONTENT = "one two three four five six"


@dataclass
class Upstreams:
    stack: Stack
    servers: dict[str, FakeOpenAI]


@pytest.fixture(scope="module")
async def upstreams(
    fake_mesh: FakeMesh, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Upstreams]:
    anthropic, tgi = FakeAnthropic(), FakeTGI()
    await anthropic.start()
    await tgi.start()
    common = {"api_key_env": "TEST_KEY_VAR", "timeout_seconds": 5, "max_retries": 0, **PRICES}
    more = {
        "claude": {"provider": "anthropic", "model": "claude-test", "base_url": anthropic.base_url}
        | common,
        "tgi": {"provider": "huggingface", "model": "tgi-test", "base_url": tgi.base_url} | common,
    }
    try:
        async with real_router_stack(
            fake_mesh, tmp_path_factory.mktemp("router-usage"), more, **PRICES
        ) as stack:
            yield Upstreams(stack, {"default": stack.upstream, "claude": anthropic, "tgi": tgi})
    finally:
        await anthropic.stop()
        await tgi.stop()


async def _records(stack: Stack, request_id: str) -> list[UsageRecord]:
    state = state_of(stack.app)
    deadline = time.monotonic() + 5
    rows: list[UsageRecord] = []
    while time.monotonic() < deadline:
        await state.usage.drain()
        async with state.db_sessions() as session:
            rows = list(
                (
                    await session.execute(
                        select(UsageRecord).where(UsageRecord.request_id == request_id)
                    )
                ).scalars()
            )
        if rows:
            await asyncio.sleep(0.05)  # a second record, if any, would be there now
            await state.usage.drain()
            async with state.db_sessions() as session:
                return list(
                    (
                        await session.execute(
                            select(UsageRecord).where(UsageRecord.request_id == request_id)
                        )
                    ).scalars()
                )
        await asyncio.sleep(0.02)
    return rows


def _headers(request_id: str) -> dict[str, str]:
    return {**bearer(token("acme", ["user"], subject="ann")), "X-Request-ID": request_id}


async def _whole(
    http: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    outcome: str,
    request_id: str,
    content: Callable[[dict[str, Any]], str],
) -> dict[str, Any]:
    """A call not streamed: what the client saw ("status", "content"), or nothing when it
    leaves (``outcome`` "cancelled") once the upstream has sent its first words."""
    seen: dict[str, Any] = {"content": ""}
    request = asyncio.create_task(http.post(path, json=body, headers=_headers(request_id)))
    if outcome == "cancelled":
        await asyncio.sleep(0.8)  # the upstream has sent its first words
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        return seen
    reply = await request
    seen["status"] = reply.status_code
    if reply.status_code == 200:
        seen["content"] = content(reply.json())
    return seen


async def _call(
    stack: Stack, alias: str, stream: bool, outcome: str, request_id: str
) -> dict[str, Any]:
    """Runs the call; returns what the client saw ("status", "content", "error")."""
    body: dict[str, Any] = {
        "model": alias,
        "messages": [{"role": "user", "content": "Count to six"}],
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    seen: dict[str, Any] = {"content": ""}
    async with httpx.AsyncClient(base_url=stack.live_url, timeout=30) as http:
        if not stream:
            return await _whole(
                http,
                "/v1/chat/completions",
                body,
                outcome,
                request_id,
                lambda r: r["choices"][0]["message"]["content"],
            )
        async with http.stream(
            "POST", "/v1/chat/completions", json=body, headers=_headers(request_id)
        ) as reply:
            seen["status"] = reply.status_code
            async for line in reply.aiter_lines():
                if '"error"' in line:
                    seen["error"] = line
                if '"content":"one' in line and outcome == "cancelled":
                    return seen  # leaves mid-reply
                if '"content":"' in line:
                    seen["content"] += line.split('"content":"', 1)[1].split('"', 1)[0]
    return seen


async def _call_responses(
    stack: Stack, alias: str, stream: bool, outcome: str, request_id: str
) -> dict[str, Any]:
    """The same through OpenAI's Responses API (``POST /v1/responses``)."""
    body: dict[str, Any] = {"model": alias, "input": "Count to six", "store": False}
    seen: dict[str, Any] = {"content": ""}
    async with httpx.AsyncClient(base_url=stack.live_url, timeout=30) as http:
        if not stream:
            return await _whole(
                http,
                "/v1/responses",
                body,
                outcome,
                request_id,
                lambda r: r["output"][0]["content"][0]["text"],
            )
        async with http.stream(
            "POST", "/v1/responses", json=body | {"stream": True}, headers=_headers(request_id)
        ) as reply:
            seen["status"] = reply.status_code
            async for line in reply.aiter_lines():
                if line == "event: response.failed":
                    seen["error"] = line
                if '"delta":"one' in line and outcome == "cancelled":
                    return seen  # leaves mid-reply
                if '"type":"response.output_text.delta"' in line:
                    seen["content"] += line.split('"delta":"', 1)[1].split('"', 1)[0]
    return seen


async def _call_summarize(
    stack: Stack, alias: str, stream: bool, outcome: str, request_id: str
) -> dict[str, Any]:
    """The same through aimesh's own ``POST /v1/summarize`` (typed SSE events when streamed)."""
    body: dict[str, Any] = {"model": alias, "text": "Count to six, one word at a time."}
    seen: dict[str, Any] = {"content": ""}
    async with httpx.AsyncClient(base_url=stack.live_url, timeout=30) as http:
        if not stream:
            return await _whole(
                http, "/v1/summarize", body, outcome, request_id, lambda r: r["summary"]
            )
        async with http.stream(
            "POST", "/v1/summarize", json=body | {"stream": True}, headers=_headers(request_id)
        ) as reply:
            seen["status"] = reply.status_code
            kind = ""
            async for line in reply.aiter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                    if kind == "error":
                        seen["error"] = line
                elif line.startswith("data: ") and kind == "delta":
                    if outcome == "cancelled":
                        return seen  # leaves mid-reply
                    seen["content"] += json.loads(line.removeprefix("data: "))["text"]
    return seen


CALLS = {"chat": _call, "responses": _call_responses, "summarize": _call_summarize}
OUTCOMES = ["completed", "cancelled", "failed"]
TABLE = [
    ("chat", alias, stream, outcome)
    for alias, stream, outcome in itertools.product(
        ["default", "claude", "tgi"], [False, True], OUTCOMES
    )
] + [
    (route, alias, stream, outcome)
    for route, alias, stream, outcome in itertools.product(
        ["responses", "summarize"], ["default", "claude"], [False, True], OUTCOMES
    )
]


@pytest.mark.parametrize(("route", "alias", "stream", "outcome"), TABLE)
async def test_usage_is_charged_once_exactly_or_flagged(
    upstreams: Upstreams, route: str, alias: str, stream: bool, outcome: str
) -> None:
    stack = upstreams.stack
    server = upstreams.servers.get(alias)
    if server is not None:
        server.reset()
        if outcome == "completed":
            server.enqueue(Reply(content=CONTENT, usage=REPORTED))
        elif outcome == "cancelled":
            server.enqueue(Reply(content=CONTENT, usage=REPORTED, chunk_delay=0.5))
        else:
            server.enqueue(Reply(content=CONTENT, usage=REPORTED, break_after=2))
    request_id = f"usage-{route}-{alias}-{'stream' if stream else 'whole'}-{outcome}"
    seen = await CALLS[route](stack, alias, stream, outcome, request_id)
    rows = await _records(stack, request_id)
    assert len(rows) == 1, f"{len(rows)} usage records: {seen}"
    row = rows[0]
    assert row.cost_usd == pytest.approx(
        (row.prompt_tokens * 1.0 + row.completion_tokens * 2.0) / 1000
    )
    if outcome == "completed":
        assert seen["status"] == 200
        assert seen["content"] == CONTENT
        # Exactly what the provider reported, and not flagged.
        assert (row.prompt_tokens, row.completion_tokens) == (17, 6)
        assert not row.estimated
        assert row.provider in {"openai", "anthropic", "huggingface"}
        return
    if outcome == "failed":
        if stream:
            assert seen["status"] == 200
            assert "error" in seen
        else:
            assert seen["status"] >= 500
    # Ended early: what was spent, flagged as an estimate: the words sent so far, and the
    # prompt as reported by a provider that reports it up front (Anthropic's
    # message_start), else counted.
    assert row.estimated
    assert 0 < row.completion_tokens < 6
    if alias == "claude":
        assert row.prompt_tokens == 17
    else:
        assert row.prompt_tokens > 0
