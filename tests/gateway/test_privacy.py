"""Personal data kept from a third-party provider (issue 24 §2), end to end.

The path is real: httpx over TCP -> the gateway (uvicorn) -> the real llm-router over gRPC
-> an OpenAI-protocol HTTP server standing in for the hosted provider, which records every
request body it receives. Its alias has the policy ``redact``; tenant ``strict-*`` has
``block`` for every alias. Every route that reaches the provider (chat completions,
``rag:``, ask, summarize, conversations, the Responses API with and without file_search) is
driven with a text full of personal data (in the messages, in the collection that grounds
ask, ``rag:`` and a conversation, in the text to summarize): no value reaches the upstream,
the upstream gets the placeholders, and the client gets its own values back in the reply,
whole and streamed (the upstream streams three characters per chunk, so placeholders arrive
split). Under ``block`` the gateway answers 422 naming the entity types and nothing reaches
the upstream, the fallback alias included.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import editor, user
from tests.gateway.live_stack import gateway_on_router
from tests.llm_router.openai_server import FakeOpenAI, Reply

EMAIL = "ada.lovelace@example.org"
PHONE = "+1 415-555-0132"
CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"
IP = "203.0.113.45"
SECRET = "sk-proj-Q2x9LmT4vR8zK1pW7sN3bY6c"
VALUES = (EMAIL, PHONE, CARD, IBAN, IP, SECRET)
TYPES = ["CARD", "EMAIL", "IBAN", "IP_ADDRESS", "PHONE", "SECRET"]

TEXT = (
    f"Ada ({EMAIL}, {PHONE}) paid the invoice with card {CARD} from IBAN {IBAN}; "
    f"her laptop at {IP} used the key {SECRET}."
)
# What the upstream answers: the placeholders the router made for TEXT, in its order.
REPLY = (
    "Reach <EMAIL_1> or <PHONE_1>; card <CARD_1>, IBAN <IBAN_1>, host <IP_ADDRESS_1>, "
    "key <SECRET_1> [1]."
)
RESTORED = f"Reach {EMAIL} or {PHONE}; card {CARD}, IBAN {IBAN}, host {IP}, key {SECRET} [1]."


@dataclass
class PrivateMesh:
    upstream: FakeOpenAI
    url: str


@pytest.fixture(scope="module")
async def mesh(fake_mesh: FakeMesh) -> AsyncIterator[PrivateMesh]:
    upstream = FakeOpenAI()
    await upstream.start()

    def alias(**more: object) -> dict[str, object]:
        return {
            "provider": "openai",
            "model": "hosted-model",
            "base_url": upstream.base_url,
            "timeout_seconds": 5,
            "max_retries": 0,
            "privacy": "redact",
            **more,
        }

    models = {
        "models": {"default": alias(fallbacks=["spare"]), "spare": alias()},
        "privacy": {"tenants": {"strict-t": {"default": "block"}}},
    }
    async with gateway_on_router(fake_mesh, models) as url:
        yield PrivateMesh(upstream, url)
    await upstream.stop()


@pytest.fixture
async def http(mesh: PrivateMesh) -> AsyncIterator[httpx.AsyncClient]:
    mesh.upstream.reset()
    mesh.upstream.always = Reply(content=REPLY, chunk_size=3)
    async with httpx.AsyncClient(base_url=mesh.url, timeout=30) as client:
        yield client


def assert_nothing_leaked(upstream: FakeOpenAI, calls: int) -> None:
    """The upstream got ``calls`` requests, with the placeholders and none of the values."""
    assert len(upstream.requests) == calls
    for recorded in upstream.requests:
        body = json.dumps(recorded.body, ensure_ascii=False)
        for value in VALUES:
            assert value not in body
            assert value.replace(" ", "") not in body.replace(" ", "")
        assert "<EMAIL_1>" in body
        assert "<SECRET_1>" in body


# The values of TEXT in documents of at most 8 words: the fake retrieval cuts chunks of 8
# words, and a value cut in two is not a value a detector can check (docs/privacy.md).
DOCUMENTS = [
    f"Ada's mail is {EMAIL}, phone {PHONE}.",
    f"Card {CARD} paid the invoice.",
    f"IBAN {IBAN}.",
    f"Laptop {IP} used key {SECRET}.",
]


async def collection(client: httpx.AsyncClient, tenant: str) -> str:
    """A collection of ``tenant`` holding the values of TEXT."""
    name = f"people-{uuid.uuid4().hex[:6]}"
    documents = [{"id": f"ada-{n}", "text": text} for n, text in enumerate(DOCUMENTS)]
    stored = await client.post(
        f"/v1/collections/{name}/documents",
        json={"documents": documents},
        headers=editor(tenant),
    )
    assert stored.status_code in (200, 201), stored.text
    return name


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines.get("event", "message"), json.loads(lines["data"])))
    return events


def deltas(text: str) -> str:
    return "".join(data["text"] for kind, data in sse(text) if kind == "delta")


def openai_stream_text(text: str) -> str:
    pieces = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line.removeprefix("data: "))
            for choice in chunk.get("choices", []):
                pieces.append(choice.get("delta", {}).get("content") or "")
    return "".join(pieces)


def assert_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for value in VALUES:
        assert value not in logged


async def test_chat_completions_whole_and_streamed(
    http: httpx.AsyncClient, mesh: PrivateMesh, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    messages = [
        {"role": "system", "content": f"The operator is reachable at {EMAIL}."},
        {"role": "user", "content": TEXT},
    ]
    whole = await http.post(
        "/v1/chat/completions", json={"model": "default", "messages": messages}, headers=user()
    )
    assert whole.status_code == 200, whole.text
    assert whole.json()["choices"][0]["message"]["content"] == RESTORED
    streamed = await http.post(
        "/v1/chat/completions",
        json={"model": "default", "messages": messages, "stream": True},
        headers=user(),
    )
    assert streamed.status_code == 200, streamed.text
    assert openai_stream_text(streamed.text) == RESTORED
    assert_nothing_leaked(mesh.upstream, 2)
    assert_not_logged(caplog)


def responses_stream_text(text: str) -> str:
    return "".join(
        data["delta"] for kind, data in sse(text) if kind == "response.output_text.delta"
    )


async def test_responses_whole_streamed_and_file_search(
    http: httpx.AsyncClient, mesh: PrivateMesh, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenAI's Responses API: instructions and input redacted, the reply restored, whole and
    streamed; with file_search, the sources from the collection too."""
    caplog.set_level(logging.DEBUG)
    body = {
        "model": "default",
        "instructions": f"The operator is reachable at {EMAIL}.",
        "input": TEXT,
        "store": False,
    }
    whole = await http.post("/v1/responses", json=body, headers=user())
    assert whole.status_code == 200, whole.text
    assert whole.json()["output"][0]["content"][0]["text"] == RESTORED
    streamed = await http.post("/v1/responses", json={**body, "stream": True}, headers=user())
    assert streamed.status_code == 200, streamed.text
    assert responses_stream_text(streamed.text) == RESTORED
    tenant = f"pii-{uuid.uuid4().hex[:6]}"
    name = await collection(http, tenant)
    searched = await http.post(
        "/v1/responses",
        json={
            "model": "default",
            "input": f"What did Ada pay the invoice with? Answer to {EMAIL}.",
            "tools": [{"type": "file_search", "vector_store_ids": [name]}],
            "store": False,
        },
        headers=user(tenant),
    )
    assert searched.status_code == 200, searched.text
    message = next(item for item in searched.json()["output"] if item["type"] == "message")
    text = message["content"][0]["text"]
    for value in VALUES:
        assert value in text
    assert_nothing_leaked(mesh.upstream, 3)
    assert_not_logged(caplog)


async def test_ask_and_rag_sources_whole_and_streamed(
    http: httpx.AsyncClient, mesh: PrivateMesh
) -> None:
    tenant = f"pii-{uuid.uuid4().hex[:6]}"
    name = await collection(http, tenant)
    question = f"What did Ada pay the invoice with? Answer to {EMAIL}."
    asked = await http.post(
        "/v1/ask", json={"question": question, "collection": name}, headers=user(tenant)
    )
    assert asked.status_code == 200, asked.text
    assert asked.json()["answer"] == RESTORED
    streamed = await http.post(
        "/v1/ask",
        json={"question": question, "collection": name, "stream": True},
        headers=user(tenant),
    )
    assert streamed.status_code == 200, streamed.text
    assert deltas(streamed.text) == RESTORED
    rag = {"model": f"rag:{name}", "messages": [{"role": "user", "content": question}]}
    whole = await http.post("/v1/chat/completions", json=rag, headers=user(tenant))
    assert whole.status_code == 200, whole.text
    assert whole.json()["choices"][0]["message"]["content"].startswith(RESTORED)
    rag_streamed = await http.post(
        "/v1/chat/completions", json={**rag, "stream": True}, headers=user(tenant)
    )
    assert rag_streamed.status_code == 200, rag_streamed.text
    assert openai_stream_text(rag_streamed.text).startswith(RESTORED)
    assert_nothing_leaked(mesh.upstream, 4)


async def test_summarize_whole_and_streamed(http: httpx.AsyncClient, mesh: PrivateMesh) -> None:
    whole = await http.post("/v1/summarize", json={"text": TEXT}, headers=user())
    assert whole.status_code == 200, whole.text
    assert whole.json()["summary"] == RESTORED
    streamed = await http.post("/v1/summarize", json={"text": TEXT, "stream": True}, headers=user())
    assert streamed.status_code == 200, streamed.text
    assert deltas(streamed.text) == RESTORED
    assert_nothing_leaked(mesh.upstream, 2)


@pytest.mark.parametrize("grounded", [False, True], ids=["chat", "grounded"])
async def test_conversation_messages_and_history(
    http: httpx.AsyncClient, mesh: PrivateMesh, grounded: bool
) -> None:
    tenant = f"pii-{uuid.uuid4().hex[:6]}"
    body: dict[str, Any] = {"title": "Ada"}
    if grounded:
        body["collection"] = await collection(http, tenant)
    created = await http.post("/v1/conversations", json=body, headers=user(tenant))
    assert created.status_code == 201, created.text
    path = f"/v1/conversations/{created.json()['id']}/messages"
    first = await http.post(path, json={"content": TEXT}, headers=user(tenant))
    assert first.status_code == 200, first.text
    assert deltas(first.text) == RESTORED
    # The second turn sends the history (the values, as stored) again: redacted again.
    second = await http.post(path, json={"content": "And the IBAN?"}, headers=user(tenant))
    assert second.status_code == 200, second.text
    assert deltas(second.text) == RESTORED
    stored = await http.get(path.removesuffix("/messages"), headers=user(tenant))
    assert [m["content"] for m in stored.json()["messages"]][:2] == [TEXT, RESTORED]
    assert_nothing_leaked(mesh.upstream, 2)


async def test_block_answers_422_naming_the_types_and_sends_nothing(
    http: httpx.AsyncClient, mesh: PrivateMesh, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    strict = user("strict-t")
    name = await collection(http, "strict-t")
    refused = [
        await http.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": TEXT}]},
            headers=strict,
        ),
        await http.post(
            "/v1/chat/completions",
            json={
                "model": "default",
                "messages": [{"role": "user", "content": TEXT}],
                "stream": True,
            },
            headers=strict,
        ),
        await http.post("/v1/summarize", json={"text": TEXT, "stream": True}, headers=strict),
        await http.post(
            "/v1/ask",
            json={"question": "What did Ada pay with?", "collection": name},
            headers=strict,
        ),
    ]
    for response in refused:
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["code"] == "personal_data_blocked"
        if response.request.url.path == "/v1/chat/completions":
            assert problem["error"]["code"] == "personal_data_blocked"
        assert problem["entity_types"] == TYPES
        for value in VALUES:
            assert value not in response.text
    # A request without personal data still goes through for that tenant.
    clean = await http.post(
        "/v1/summarize", json={"text": "The sky is blue today."}, headers=strict
    )
    assert clean.status_code == 200, clean.text
    # Neither the alias nor its fallback got any of the refused requests.
    assert len(mesh.upstream.requests) == 1
    assert_not_logged(caplog)


MAIL_TOOL = {
    "type": "function",
    "function": {
        "name": "send_mail",
        "description": "Send an e-mail.",
        "parameters": {
            "type": "object",
            "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
            "required": ["to"],
        },
    },
}


async def test_tool_calls_and_tool_results(http: httpx.AsyncClient, mesh: PrivateMesh) -> None:
    """Tool call arguments the model writes with placeholders reach the client with the
    values; the values in the client's tool calls and tool results are redacted."""
    mesh.upstream.always = Reply(
        content="",
        tool_calls=[
            {
                "id": "call_1",
                "name": "send_mail",
                "arguments": '{"to": "<EMAIL_1>", "body": "<CARD_1>"}',
            }
        ],
        finish_reason="tool_calls",
    )
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": TEXT},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "send_mail", "arguments": json.dumps({"to": EMAIL})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": f"sent from {IP} with {SECRET}"},
    ]
    body = {"model": "default", "messages": messages, "tools": [MAIL_TOOL]}
    whole = await http.post("/v1/chat/completions", json=body, headers=user())
    assert whole.status_code == 200, whole.text
    call = whole.json()["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"to": EMAIL, "body": CARD}
    streamed = await http.post(
        "/v1/chat/completions", json={**body, "stream": True}, headers=user()
    )
    assert streamed.status_code == 200, streamed.text
    arguments = ""
    for line in streamed.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line.removeprefix("data: ")).get("choices", []):
                for piece in choice.get("delta", {}).get("tool_calls") or []:
                    arguments += piece.get("function", {}).get("arguments") or ""
    assert json.loads(arguments) == {"to": EMAIL, "body": CARD}
    assert_nothing_leaked(mesh.upstream, 2)
