"""Feedback on answers: POST /v1/feedback, GET /v1/admin/feedback and its summary.

Each answer route records its request id with the model, provider and prompt version that
answered; a rating refers to that record, only inside the caller's tenant.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import on_each_database
from tests.gateway.helpers import assert_problem, bearer, token

# The routes keep state: every test runs on SQLite and on the real PostgreSQL.
app, client = on_each_database()


COLLECTION = "feedback-docs"


def tenant() -> str:
    return f"fb-{uuid.uuid4().hex[:10]}"


def as_user(tenant_id: str, subject: str = "ann") -> dict[str, str]:
    return bearer(token(tenant_id, ["user"], subject=subject))


def as_admin(tenant_id: str) -> dict[str, str]:
    return bearer(token(tenant_id, ["admin"], subject="boss"))


def request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def store_docs(client: httpx.AsyncClient, tenant_id: str) -> None:
    response = await client.post(
        f"/v1/collections/{COLLECTION}/documents",
        json=[{"id": "eiffel", "text": "The Eiffel Tower was completed in 1889"}],
        headers=bearer(token(tenant_id, ["editor"])),
    )
    assert response.status_code == 200, response.text


async def ask(client: httpx.AsyncClient, tenant_id: str, **extra: Any) -> httpx.Response:
    await store_docs(client, tenant_id)
    rid = request_id()
    response = await client.post(
        "/v1/ask",
        json={
            "question": "When was the Eiffel Tower completed?",
            "collection": COLLECTION,
            **extra,
        },
        headers={**as_user(tenant_id), "X-Request-ID": rid},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == rid
    return response


async def rate(
    client: httpx.AsyncClient, tenant_id: str, rid: str, rating: int, **extra: Any
) -> httpx.Response:
    headers = extra.pop("headers", None) or as_user(tenant_id)
    return await client.post(
        "/v1/feedback", json={"request_id": rid, "rating": rating, **extra}, headers=headers
    )


async def test_an_answer_can_be_rated_and_rerated(client: httpx.AsyncClient) -> None:
    acme = tenant()
    answered = await ask(client, acme)
    body = answered.json()
    assert (body["provider"], body["prompt_version"]) == ("fake", "qa/v1")
    rid = answered.headers["x-request-id"]

    first = await rate(client, acme, rid, 1)
    assert first.status_code == 201, first.text
    item = first.json()
    assert item["request_id"] == rid
    assert (item["rating"], item["comment"]) == (1, None)
    assert (item["route"], item["model"], item["provider"], item["prompt_version"]) == (
        "/v1/ask",
        "default",
        "fake",
        "qa/v1",
    )
    assert item["created_at"]

    again = await rate(client, acme, rid, -1, comment="Wrong year.")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == item["id"]
    assert (again.json()["rating"], again.json()["comment"]) == (-1, "Wrong year.")

    # Another user of the tenant rates the same answer separately.
    other = await rate(client, acme, rid, 1, headers=as_user(acme, "bob"))
    assert other.status_code == 201
    assert other.json()["id"] != item["id"]

    listed = await client.get("/v1/admin/feedback", headers=as_admin(acme))
    assert listed.status_code == 200, listed.text
    rows = listed.json()["data"]
    assert [(r["subject"], r["rating"]) for r in rows] == [("bob", 1), ("ann", -1)]


async def test_only_answers_of_the_callers_tenant_can_be_rated(client: httpx.AsyncClient) -> None:
    acme, other = tenant(), tenant()
    rid = (await ask(client, acme)).headers["x-request-id"]
    assert_problem(await rate(client, other, rid, 1), 404)
    assert_problem(await rate(client, acme, request_id(), 1), 404)
    # A request that is not an answer (a search) cannot be rated either.
    searched = await client.post(
        f"/v1/collections/{COLLECTION}/search",
        json={"query": "tower"},
        headers={**as_user(acme), "X-Request-ID": (search_id := request_id())},
    )
    assert searched.status_code == 200, searched.text
    assert_problem(await rate(client, acme, search_id, 1), 404)
    # The other tenant's admin sees nothing; acme's sees no rating yet.
    assert (await client.get("/v1/admin/feedback", headers=as_admin(other))).json()["data"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"request_id": "abc", "rating": 0}, "body.rating"),
        ({"request_id": "abc", "rating": 2}, "body.rating"),
        ({"request_id": "abc", "rating": "up"}, "body.rating"),
        ({"request_id": "abc", "rating": 1, "comment": "x" * 2001}, "body.comment"),
        ({"rating": 1}, "body.request_id"),
        ({"request_id": "has spaces", "rating": 1}, "body.request_id"),
        ({"request_id": "", "rating": 1}, "body.request_id"),
        ({"request_id": "abc", "rating": 1, "stars": 5}, "body.stars"),
    ],
)
async def test_invalid_feedback_is_a_422_problem(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/feedback", json=body, headers=as_user(tenant()))
    problem = assert_problem(response, 422)
    assert field in {error["field"] for error in problem["errors"]}


async def test_a_comment_of_2000_characters_is_accepted(client: httpx.AsyncClient) -> None:
    acme = tenant()
    rid = (await ask(client, acme)).headers["x-request-id"]
    response = await rate(client, acme, rid, 1, comment="y" * 2000)
    assert response.status_code == 201, response.text


async def test_streamed_answers_and_summaries_carry_the_request_id(
    client: httpx.AsyncClient,
) -> None:
    acme = tenant()
    streamed = await ask(client, acme, stream=True)
    events = sse_events(streamed.text)
    name, done = events[-1]
    assert name == "done"
    assert done == {
        "model": "default",
        "finish_reason": "stop",
        "provider": "fake",
        "prompt_version": "qa/v1",
        "fallback_reason": "",
        "replaced_model": "",
        "request_id": streamed.headers["x-request-id"],
    }
    assert (await rate(client, acme, done["request_id"], -1)).status_code == 201

    summary = await client.post(
        "/v1/summarize",
        json={"text": "Cats sleep a lot. Dogs bark.", "stream": True},
        headers=as_user(acme),
    )
    assert summary.status_code == 200, summary.text
    done = sse_events(summary.text)[-1][1]
    assert done["request_id"] == summary.headers["x-request-id"]
    assert (done["provider"], done["prompt_version"]) == ("fake", "summarize/v1")
    rated = await rate(client, acme, done["request_id"], 1)
    assert rated.status_code == 201
    assert rated.json()["route"] == "/v1/summarize"


async def test_summaries_and_chat_completions_can_be_rated(client: httpx.AsyncClient) -> None:
    acme = tenant()
    summary = await client.post(
        "/v1/summarize", json={"text": "Cats sleep a lot. Dogs bark."}, headers=as_user(acme)
    )
    assert summary.status_code == 200, summary.text
    assert (summary.json()["provider"], summary.json()["prompt_version"]) == (
        "fake",
        "summarize/v1",
    )
    assert (await rate(client, acme, summary.headers["x-request-id"], 1)).status_code == 201

    chat_body = {"model": "default", "messages": [{"role": "user", "content": "hi there"}]}
    for stream in (False, True):
        chat = await client.post(
            "/v1/chat/completions", json={**chat_body, "stream": stream}, headers=as_user(acme)
        )
        assert chat.status_code == 200, chat.text
        rated = await rate(client, acme, chat.headers["x-request-id"], -1)
        assert rated.status_code == 201, rated.text
        assert (rated.json()["route"], rated.json()["provider"]) == ("/v1/chat/completions", "fake")
        assert rated.json()["prompt_version"] == "chat/v1"

    await store_docs(client, acme)
    rag = await client.post(
        "/v1/chat/completions",
        json={"model": f"rag:{COLLECTION}", "messages": [{"role": "user", "content": "Eiffel?"}]},
        headers=as_user(acme),
    )
    assert rag.status_code == 200, rag.text
    rated = await rate(client, acme, rag.headers["x-request-id"], 1)
    assert (rated.json()["model"], rated.json()["prompt_version"]) == (f"rag:{COLLECTION}", "qa/v1")


async def test_conversation_replies_can_be_rated(client: httpx.AsyncClient) -> None:
    acme = tenant()
    created = await client.post("/v1/conversations", json={}, headers=as_user(acme))
    assert created.status_code == 201, created.text
    reply = await client.post(
        f"/v1/conversations/{created.json()['id']}/messages",
        json={"content": "hello"},
        headers=as_user(acme),
    )
    assert reply.status_code == 200, reply.text
    done = sse_events(reply.text)[-1][1]
    assert done["request_id"] == reply.headers["x-request-id"]
    assert (done["provider"], done["prompt_version"]) == ("fake", "chat/v1")
    rated = await rate(client, acme, done["request_id"], 1)
    assert rated.status_code == 201, rated.text
    assert rated.json()["route"] == "/v1/conversations/{conversation_id}/messages"


async def test_admin_lists_filters_and_summarizes(client: httpx.AsyncClient) -> None:
    acme = tenant()
    ids = [(await ask(client, acme)).headers["x-request-id"] for _ in range(3)]
    summary = await client.post(
        "/v1/summarize", json={"text": "Some text to shorten."}, headers=as_user(acme)
    )
    for rid, rating in zip(ids, (1, 1, -1), strict=True):
        assert (await rate(client, acme, rid, rating)).status_code == 201
    assert (await rate(client, acme, summary.headers["x-request-id"], -1)).status_code == 201

    admin = as_admin(acme)
    everything = (await client.get("/v1/admin/feedback", headers=admin)).json()["data"]
    assert len(everything) == 4
    assert everything[0]["request_id"] == summary.headers["x-request-id"]  # newest first
    assert all(row["subject"] == "ann" for row in everything)
    down = (await client.get("/v1/admin/feedback?rating=-1", headers=admin)).json()["data"]
    assert {row["request_id"] for row in down} == {ids[2], summary.headers["x-request-id"]}
    limited = (await client.get("/v1/admin/feedback?limit=1", headers=admin)).json()["data"]
    assert len(limited) == 1
    assert_problem(await client.get("/v1/admin/feedback?rating=0", headers=admin), 422)
    assert_problem(await client.get("/v1/admin/feedback?limit=0", headers=admin), 422)

    summarized = await client.get("/v1/admin/feedback/summary", headers=admin)
    assert summarized.status_code == 200, summarized.text
    assert summarized.json()["data"] == [
        {
            "route": "/v1/ask",
            "model": "default",
            "provider": "fake",
            "prompt_version": "qa/v1",
            "count": 3,
            "up": 2,
            "down": 1,
            "score": pytest.approx(1 / 3),
        },
        {
            "route": "/v1/summarize",
            "model": "default",
            "provider": "fake",
            "prompt_version": "summarize/v1",
            "count": 1,
            "up": 0,
            "down": 1,
            "score": -1.0,
        },
    ]
    other = await client.get("/v1/admin/feedback/summary", headers=as_admin(tenant()))
    assert other.json() == {"data": []}
