"""Conversations and streamed /v1/ask and /v1/summarize through the gateway, in front of
the real LLM router (SQLite store) whose model is an OpenAI-protocol test server; the
tenant's admin listing also in front of the fake router (tests/gateway/fakes.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import bearer, token
from tests.gateway.live_stack import Stack, real_router_stack
from tests.llm_router.openai_server import Reply


@pytest.fixture(scope="module")
async def stack(
    fake_mesh: FakeMesh, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with real_router_stack(fake_mesh, tmp_path_factory.mktemp("router-conversations")) as s:
        yield s


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    stack.upstream.reset()
    transport = httpx.ASGITransport(app=stack.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


@pytest.fixture
async def client_of_fakes(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway in front of the fake mesh (tests/gateway/conftest.py)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


def as_user(subject: str = "ann", tenant: str = "acme") -> dict[str, str]:
    return bearer(token(tenant, ["user"], subject=subject))


def as_admin(tenant: str) -> dict[str, str]:
    return bearer(token(tenant, ["admin"], subject="boss"))


ADMIN_LIST = "/v1/admin/conversations"


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_conversation_round_trip(client: httpx.AsyncClient, stack: Stack) -> None:
    created = await client.post("/v1/conversations", json={"title": "Pets"}, headers=as_user())
    assert created.status_code == 201, created.text
    conversation = created.json()
    assert conversation["model"] == "default"
    assert conversation["messages"] == []
    stack.upstream.enqueue(
        Reply(
            content="Hello Ann",
            usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
        )
    )
    reply = await client.post(
        f"/v1/conversations/{conversation['id']}/messages",
        json={"content": "Hi, I am Ann"},
        headers=as_user(),
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(reply.text)
    assert [name for name, _ in events] == ["delta", "delta", "usage", "done"]
    assert "".join(data["text"] for name, data in events if name == "delta") == "Hello Ann"
    assert events[2][1]["prompt_tokens"] == 9
    assert events[-1][1] == {
        "model": "default",
        "finish_reason": "stop",
        "provider": "openai",
        "prompt_version": "chat/v1",
        "fallback_reason": "",
        "replaced_model": "",
        "request_id": reply.headers["x-request-id"],
    }
    stored = await client.get(f"/v1/conversations/{conversation['id']}", headers=as_user())
    assert [(m["role"], m["content"]) for m in stored.json()["messages"]] == [
        ("user", "Hi, I am Ann"),
        ("assistant", "Hello Ann"),
    ]


async def test_answers_of_the_real_router_can_be_rated(
    client: httpx.AsyncClient, stack: Stack
) -> None:
    """End to end: the router reports provider and prompt, the gateway records them per
    request id, and a rating of that id carries them."""
    stack.retrieval.put("acme", "kb", [("d1", "Paris is in France.")])
    stack.upstream.enqueue(Reply(content="Paris is in France [1]."))
    asked = await client.post(
        "/v1/ask", json={"question": "Where is Paris?", "collection": "kb"}, headers=as_user()
    )
    assert asked.status_code == 200, asked.text
    assert (asked.json()["provider"], asked.json()["prompt_version"]) == ("openai", "qa/v1")
    rated = await client.post(
        "/v1/feedback",
        json={"request_id": asked.headers["x-request-id"], "rating": -1, "comment": "vague"},
        headers=as_user(),
    )
    assert rated.status_code == 201, rated.text
    assert rated.json()["provider"] == "openai"
    assert rated.json()["prompt_version"] == "qa/v1"

    stack.upstream.enqueue(Reply(content="Short."))
    summary = await client.post(
        "/v1/summarize", json={"text": "Cats sleep.", "stream": True}, headers=as_user()
    )
    done = parse_sse(summary.text)[-1][1]
    assert (done["provider"], done["prompt_version"]) == ("openai", "summarize/v1")
    rated = await client.post(
        "/v1/feedback", json={"request_id": done["request_id"], "rating": 1}, headers=as_user()
    )
    assert rated.status_code == 201, rated.text
    assert rated.json()["route"] == "/v1/summarize"


async def test_list_and_delete_conversations(client: httpx.AsyncClient, stack: Stack) -> None:
    """A user lists their own conversations (newest first, with sizes) and deletes them;
    another user or tenant neither sees nor deletes them."""
    owner = as_user("lister", "acme")
    first = (await client.post("/v1/conversations", json={"title": "one"}, headers=owner)).json()
    second = (await client.post("/v1/conversations", json={"title": "two"}, headers=owner)).json()
    stack.upstream.enqueue(Reply(content="Hi"))
    await client.post(
        f"/v1/conversations/{first['id']}/messages", json={"content": "Hello"}, headers=owner
    )
    listed = await client.get("/v1/conversations", headers=owner)
    assert listed.status_code == 200, listed.text
    assert [(c["title"], c["message_count"]) for c in listed.json()["data"]] == [
        ("two", 0),
        ("one", 2),
    ]
    only_one = await client.get("/v1/conversations?limit=1", headers=owner)
    assert [c["id"] for c in only_one.json()["data"]] == [second["id"]]
    for other in (as_user("lister", "globex"), as_user("someone", "acme")):
        assert (await client.get("/v1/conversations", headers=other)).json()["data"] == []
        denied = await client.delete(f"/v1/conversations/{first['id']}", headers=other)
        assert denied.status_code == 404
    deleted = await client.delete(f"/v1/conversations/{first['id']}", headers=owner)
    assert deleted.status_code == 204
    gone = await client.get(f"/v1/conversations/{first['id']}", headers=owner)
    assert gone.status_code == 404
    listed = await client.get("/v1/conversations", headers=owner)
    assert [c["id"] for c in listed.json()["data"]] == [second["id"]]
    bad = await client.get("/v1/conversations?limit=0", headers=owner)
    assert bad.status_code == 422


@pytest.mark.parametrize(("subject", "tenant"), [("bob", "acme"), ("ann", "globex")])
async def test_other_users_and_tenants_get_404(
    client: httpx.AsyncClient, stack: Stack, subject: str, tenant: str
) -> None:
    conversation = (await client.post("/v1/conversations", json={}, headers=as_user())).json()
    seen = await client.get(
        f"/v1/conversations/{conversation['id']}", headers=as_user(subject, tenant)
    )
    assert seen.status_code == 404
    assert seen.headers["content-type"].startswith("application/problem+json")
    sent = await client.post(
        f"/v1/conversations/{conversation['id']}/messages",
        json={"content": "let me in"},
        headers=as_user(subject, tenant),
    )
    assert sent.status_code == 404
    assert not stack.upstream.requests


async def test_bad_requests_are_problems(client: httpx.AsyncClient) -> None:
    unknown_model = await client.post(
        "/v1/conversations", json={"model": "nosuch"}, headers=as_user()
    )
    assert unknown_model.status_code == 404
    extra = await client.post("/v1/conversations", json={"system": "obey"}, headers=as_user())
    assert extra.status_code == 422
    anonymous = await client.post("/v1/conversations", json={})
    assert anonymous.status_code == 401


async def test_streamed_ask_sends_typed_events(client: httpx.AsyncClient, stack: Stack) -> None:
    stack.retrieval.put("acme", "kb", [("d1", "Paris is in France."), ("d2", "Rome.")])
    stack.upstream.enqueue(Reply(content="Paris [1] [5]"))
    response = await client.post(
        "/v1/ask",
        json={"question": "Where is Paris?", "collection": "kb", "stream": True},
        headers=as_user(),
    )
    assert response.status_code == 200, response.text
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[0] == "sources"
    assert names[-3:] == ["citations", "usage", "done"]
    assert [s["document_id"] for s in events[0][1]["sources"]] == ["d1", "d2"]
    assert [c["source"] for c in events[-3][1]["citations"]] == [1]


async def test_streamed_summarize_and_errors(client: httpx.AsyncClient, stack: Stack) -> None:
    stack.upstream.enqueue(Reply(content="short one"))
    response = await client.post(
        "/v1/summarize", json={"text": "Cats sleep.", "stream": True}, headers=as_user()
    )
    names = [name for name, _ in parse_sse(response.text)]
    assert names == ["delta", "delta", "usage", "done"]
    stack.upstream.enqueue(Reply(status=400, error={"message": "context too long"}))
    failed = await client.post(
        "/v1/summarize", json={"text": "Cats sleep.", "stream": True}, headers=as_user()
    )
    assert failed.status_code == 400
    assert "context too long" in failed.json()["detail"]
    stack.upstream.enqueue(Reply(content="one two three four", break_after=2))
    broken = await client.post(
        "/v1/summarize", json={"text": "Cats sleep.", "stream": True}, headers=as_user()
    )
    events = parse_sse(broken.text)
    assert [name for name, _ in events] == ["delta", "delta", "error"]
    assert events[-1][1]["status"] == 503


async def test_conversations_leave_metadata_for_the_tenants_admins(
    client: httpx.AsyncClient, stack: Stack
) -> None:
    """Create, message and delete through the gateway: the admins of the tenant see each
    conversation's owner, settings, size and activity as the router keeps them, never
    another tenant's."""
    tenant = f"conv-{uuid.uuid4().hex[:8]}"
    ann, bob = as_user("ann", tenant), as_user("bob", tenant)
    stack.retrieval.put(tenant, "kb", [("d1", "Cats purr.")])
    pets = (
        await client.post(
            "/v1/conversations", json={"title": "Pets", "collection": "kb"}, headers=ann
        )
    ).json()
    plans = (await client.post("/v1/conversations", json={"title": "Plans"}, headers=bob)).json()
    dropped = (await client.post("/v1/conversations", json={"title": "Drop"}, headers=bob)).json()
    elsewhere = (
        await client.post("/v1/conversations", json={"title": "Other"}, headers=as_user("ann"))
    ).json()
    started = (await client.get(ADMIN_LIST, headers=as_admin(tenant))).json()["data"]
    first = next(c for c in started if c["id"] == pets["id"])
    assert (first["subject"], first["model"], first["collection"], first["title"]) == (
        "ann",
        "default",
        "kb",
        "Pets",
    )
    assert (first["message_count"], first["deleted_at"]) == (0, None)
    created_at = datetime.fromisoformat(first["created_at"])
    assert created_at.tzinfo is not None
    assert created_at.timestamp() == pytest.approx(pets["created_at"], abs=1e-3)

    stack.upstream.enqueue(Reply(content="They purr [1]."))
    sent = await client.post(
        f"/v1/conversations/{pets['id']}/messages",
        json={"content": "Do my cats purr?"},
        headers=ann,
    )
    assert sent.status_code == 200, sent.text
    assert parse_sse(sent.text)[-1][0] == "done"
    assert (
        await client.delete(f"/v1/conversations/{dropped['id']}", headers=bob)
    ).status_code == 204
    # A refused turn (not the owner) and a refused delete leave the metadata alone.
    refused = await client.post(
        f"/v1/conversations/{plans['id']}/messages", json={"content": "hi"}, headers=ann
    )
    assert refused.status_code == 404
    assert (await client.delete(f"/v1/conversations/{plans['id']}", headers=ann)).status_code == 404

    listed = await client.get(ADMIN_LIST, headers=as_admin(tenant))
    assert listed.status_code == 200, listed.text
    assert "purr" not in listed.text  # no message text
    items = listed.json()["data"]
    assert datetime.fromisoformat(items[0]["updated_at"]) > datetime.fromisoformat(
        items[0]["created_at"]
    )
    assert [(c["id"], c["subject"], c["message_count"]) for c in items] == [
        (pets["id"], "ann", 2),  # the most recent activity first
        (plans["id"], "bob", 0),
    ]
    assert items[0]["collection"] == "kb"
    assert items[1]["collection"] is None
    assert items[0]["deleted_at"] is None
    assert set(items[0]) == {
        "id",
        "subject",
        "model",
        "collection",
        "title",
        "created_at",
        "updated_at",
        "message_count",
        "deleted_at",
    }
    with_deleted = await client.get(
        ADMIN_LIST, params={"include_deleted": "true"}, headers=as_admin(tenant)
    )
    by_id = {c["id"]: c for c in with_deleted.json()["data"]}
    assert set(by_id) == {pets["id"], plans["id"], dropped["id"]}
    assert by_id[dropped["id"]]["deleted_at"] is not None
    assert elsewhere["id"] not in by_id
    only_bob = await client.get(
        ADMIN_LIST, params={"subject": "bob", "include_deleted": "true"}, headers=as_admin(tenant)
    )
    assert {c["id"] for c in only_bob.json()["data"]} == {plans["id"], dropped["id"]}
    one = await client.get(ADMIN_LIST, params={"limit": 1}, headers=as_admin(tenant))
    assert [c["id"] for c in one.json()["data"]] == [pets["id"]]
    other_admin = await client.get(ADMIN_LIST, headers=as_admin(f"x-{tenant}"))
    assert other_admin.json()["data"] == []


@pytest.mark.parametrize("role", ["user", "editor"])
async def test_the_conversation_listing_is_for_admins(
    client: httpx.AsyncClient, stack: Stack, role: str
) -> None:
    refused = await client.get(ADMIN_LIST, headers=bearer(token("acme", [role])))
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert (await client.get(ADMIN_LIST)).status_code == 401


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "include_deleted=maybe", "subject="])
async def test_bad_listing_queries_are_422(
    client: httpx.AsyncClient, stack: Stack, query: str
) -> None:
    response = await client.get(f"{ADMIN_LIST}?{query}", headers=as_admin("acme"))
    assert response.status_code == 422


async def test_the_admin_listing_maps_the_fake_routers_metadata(
    client_of_fakes: httpx.AsyncClient,
) -> None:
    """The same listing in front of the fake router: a deleted conversation stays listed
    with include_deleted, its deletion time and the count it had."""
    tenant = f"conv-{uuid.uuid4().hex[:8]}"
    ann, admin = as_user("ann", tenant), as_admin(tenant)
    kept = (await client_of_fakes.post("/v1/conversations", json={}, headers=ann)).json()
    gone = (
        await client_of_fakes.post(
            "/v1/conversations", json={"title": "Gone", "collection": "kb"}, headers=ann
        )
    ).json()
    sent = await client_of_fakes.post(
        f"/v1/conversations/{gone['id']}/messages", json={"content": "hi"}, headers=ann
    )
    assert sent.status_code == 200, sent.text
    deleted = await client_of_fakes.delete(f"/v1/conversations/{gone['id']}", headers=ann)
    assert deleted.status_code == 204

    listed = (await client_of_fakes.get(ADMIN_LIST, headers=admin)).json()["data"]
    assert [(c["id"], c["subject"], c["collection"], c["deleted_at"]) for c in listed] == [
        (kept["id"], "ann", None, None)
    ]
    everything = await client_of_fakes.get(
        ADMIN_LIST, params={"include_deleted": "true"}, headers=admin
    )
    by_id = {c["id"]: c for c in everything.json()["data"]}
    assert set(by_id) == {kept["id"], gone["id"]}
    assert (by_id[gone["id"]]["collection"], by_id[gone["id"]]["message_count"]) == ("kb", 2)
    deleted_at = datetime.fromisoformat(by_id[gone["id"]]["deleted_at"])
    assert deleted_at >= datetime.fromisoformat(by_id[gone["id"]]["created_at"])
    nobody = await client_of_fakes.get(
        ADMIN_LIST, params={"subject": "bob", "include_deleted": "true"}, headers=admin
    )
    assert nobody.json()["data"] == []


@pytest.mark.slow
async def test_a_client_disconnect_cancels_the_upstream_call(stack: Stack) -> None:
    stack.upstream.reset()
    async with httpx.AsyncClient(base_url=stack.live_url, timeout=10) as http:
        conversation = (await http.post("/v1/conversations", json={}, headers=as_user())).json()
        stack.upstream.enqueue(Reply(content="a b c d e f g h", chunk_delay=1.0))
        async with http.stream(
            "POST",
            f"/v1/conversations/{conversation['id']}/messages",
            json={"content": "Tell me slowly"},
            headers=as_user(),
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event: delta"):
                    break
        for _ in range(300):
            if stack.upstream.disconnects:
                break
            await asyncio.sleep(0.02)
        assert stack.upstream.disconnects == 1, "the upstream call was not cancelled"
        stored = await http.get(f"/v1/conversations/{conversation['id']}", headers=as_user())
        assert stored.json()["messages"] == []
