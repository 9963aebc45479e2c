"""Conversations over real gRPC: stored in SQLite, the real PostgreSQL and real Redis, owned
by one user of one tenant, trimmed to the context, optionally grounded in a collection; their
metadata listed for the tenant's admins."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as redis_asyncio

from aimesh.llm.v1 import llm_pb2
from tests.conftest import free_port, new_postgres_database
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

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def router(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    retrieval_server: tuple[FixedRetrieval, str],
    embedding_addr: str,
) -> AsyncIterator[RunningRouter]:
    """A router whose conversations live in SQLite, in a new PostgreSQL database, or in
    Redis under a unique prefix."""
    prefix = f"aimesh-test:{uuid.uuid4().hex}:"
    databases = contextlib.AsyncExitStack()
    store: dict[str, object] = {"data_dir": tmp_path}
    if request.param == "redis":
        store = {"redis_url": REDIS_URL, "redis_key_prefix": prefix}
    elif request.param == "postgres":
        url = await databases.enter_async_context(new_postgres_database("aimesh_router"))
        store = {"conversations_database_url": url}
    settings = openai_settings(
        fake_openai.base_url,
        retrieval_service_addr=retrieval_server[1],
        embedding_service_addr=embedding_addr,
        **store,
    )
    config = models_config(
        {
            "default": openai_model(fake_openai.base_url, max_tokens=100, context_window=600),
            "big": openai_model(fake_openai.base_url, model="big", context_window=100_000),
            "extractive": {"provider": "local"},
        }
    )
    running = await start_router(settings, config)
    yield running
    await stop_router(running)
    await databases.aclose()
    if request.param == "redis":
        client = redis_asyncio.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def create(router: RunningRouter, tenant: str, user: str, **fields: str) -> str:
    conversation = await router.stub.CreateConversation(
        llm_pb2.CreateConversationRequest(tenant_id=tenant, user_id=user, **fields)
    )
    return conversation.id


async def send(
    router: RunningRouter, tenant: str, user: str, conversation_id: str, content: str
) -> list[llm_pb2.StreamEvent]:
    call = router.stub.SendMessage(
        llm_pb2.SendMessageRequest(
            tenant_id=tenant, user_id=user, conversation_id=conversation_id, content=content
        )
    )
    return [event async for event in call if has_content(event)]


def kinds(events: list[llm_pb2.StreamEvent]) -> list[str]:
    return [str(event.WhichOneof("event")) for event in events]


async def test_a_conversation_remembers_its_turns(
    router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    conversation_id = await create(router, "acme", "ann", title="Pets")
    fake_openai.enqueue(Reply(content="Hello Ann"), Reply(content="You said hi"))
    first = await send(router, "acme", "ann", conversation_id, "Hi, I am Ann")
    assert kinds(first) == ["delta", "delta", "usage", "done"]
    assert first[-1].done.model == "default"
    await send(router, "acme", "ann", conversation_id, "What did I say?")
    sent = fake_openai.requests[1].messages
    assert sent[0]["role"] == "system"
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "Hi, I am Ann"),
        ("assistant", "Hello Ann"),
        ("user", "What did I say?"),
    ]
    stored = await router.stub.GetConversation(
        llm_pb2.GetConversationRequest(
            tenant_id="acme", user_id="ann", conversation_id=conversation_id
        )
    )
    assert stored.title == "Pets"
    assert stored.model == "default"
    assert [(m.role, m.content) for m in stored.messages] == [
        ("user", "Hi, I am Ann"),
        ("assistant", "Hello Ann"),
        ("user", "What did I say?"),
        ("assistant", "You said hi"),
    ]


@pytest.mark.parametrize(("tenant", "user"), [("acme", "bob"), ("globex", "ann")])
async def test_other_users_and_tenants_get_not_found(
    router: RunningRouter, fake_openai: FakeOpenAI, tenant: str, user: str
) -> None:
    conversation_id = await create(router, "acme", "ann")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await router.stub.GetConversation(
            llm_pb2.GetConversationRequest(
                tenant_id=tenant, user_id=user, conversation_id=conversation_id
            )
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(router, tenant, user, conversation_id, "let me in")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert not fake_openai.requests
    owner_view = await router.stub.GetConversation(
        llm_pb2.GetConversationRequest(
            tenant_id="acme", user_id="ann", conversation_id=conversation_id
        )
    )
    assert not owner_view.messages


async def test_validation(router: RunningRouter) -> None:
    cases = [
        llm_pb2.CreateConversationRequest(user_id="ann"),
        llm_pb2.CreateConversationRequest(tenant_id="acme"),
        llm_pb2.CreateConversationRequest(tenant_id="acme", user_id="ann", model="nosuch"),
    ]
    codes = []
    for request in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await router.stub.CreateConversation(request)
        codes.append(caught.value.code())
    assert codes == [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
    ]
    conversation_id = await create(router, "acme", "ann")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(router, "acme", "ann", conversation_id, "   ")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_history_is_trimmed_to_the_context_oldest_first(
    router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    conversation_id = await create(router, "acme", "ann")
    long_turn = "word " * 120
    for index in range(4):
        fake_openai.enqueue(Reply(content=f"reply {index}"))
        await send(router, "acme", "ann", conversation_id, f"{index} {long_turn}")
    last = fake_openai.requests[-1].messages
    contents = [m["content"] for m in last[1:]]
    # The context (600 tokens, 100 for the reply) holds the newest turns only.
    assert contents[-1].startswith("3 ")
    assert not any(c.startswith("0 ") for c in contents)
    assert last[1]["role"] == "user"
    big_id = await create(router, "acme", "ann", model="big")
    fake_openai.enqueue(Reply(content="ok"))
    await send(router, "acme", "ann", big_id, "short")
    assert fake_openai.requests[-1].body["model"] == "big"


async def test_a_grounded_conversation_sends_sources_and_checks_citations(
    router: RunningRouter, fake_openai: FakeOpenAI, retrieval: FixedRetrieval
) -> None:
    retrieval.put("acme", "kb", [("doc-a", "Paris is the capital of France."), ("doc-b", "Rome.")])
    conversation_id = await create(router, "acme", "ann", collection="kb")
    fake_openai.enqueue(Reply(content="Paris [1], not [7]."))
    events = await send(router, "acme", "ann", conversation_id, "Capital of France?")
    assert kinds(events)[0] == "sources"
    assert [item.document_id for item in events[0].sources.items] == ["doc-a", "doc-b"]
    citations = next(e for e in events if e.WhichOneof("event") == "citations")
    assert [(c.source, c.document_id) for c in citations.citations.items] == [(1, "doc-a")]
    assert kinds(events)[-2:] == ["usage", "done"]
    prompt = fake_openai.requests[0].messages[-1]["content"]
    assert "[1] Paris is the capital of France." in prompt
    assert prompt.endswith("Capital of France?")
    assert retrieval.searches[0].tenant_id == "acme"
    stored = await router.stub.GetConversation(
        llm_pb2.GetConversationRequest(
            tenant_id="acme", user_id="ann", conversation_id=conversation_id
        )
    )
    assert stored.messages[0].content == "Capital of France?"


async def test_listing_and_deleting_are_per_owner(router: RunningRouter) -> None:
    ids = [await create(router, "acme", "lena", title=f"t{i}") for i in range(3)]
    await create(router, "acme", "other", title="not hers")
    await create(router, "globex", "lena", title="other tenant")

    async def listed(tenant: str, user: str, limit: int = 0) -> list[tuple[str, str, int]]:
        reply = await router.stub.ListConversations(
            llm_pb2.ListConversationsRequest(tenant_id=tenant, user_id=user, limit=limit)
        )
        return [(c.id, c.title, c.message_count) for c in reply.conversations]

    assert await listed("acme", "lena") == [
        (ids[2], "t2", 0),
        (ids[1], "t1", 0),
        (ids[0], "t0", 0),
    ]
    assert [title for _, title, _ in await listed("acme", "lena", limit=2)] == ["t2", "t1"]
    for tenant, user in (("acme", "other"), ("globex", "lena")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await router.stub.DeleteConversation(
                llm_pb2.DeleteConversationRequest(
                    tenant_id=tenant, user_id=user, conversation_id=ids[0]
                )
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await router.stub.DeleteConversation(
        llm_pb2.DeleteConversationRequest(tenant_id="acme", user_id="lena", conversation_id=ids[0])
    )
    assert [title for _, title, _ in await listed("acme", "lena")] == ["t2", "t1"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await router.stub.GetConversation(
            llm_pb2.GetConversationRequest(tenant_id="acme", user_id="lena", conversation_id=ids[0])
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await listed("acme", "lena", limit=201)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_local_provider_answers_a_grounded_conversation_from_its_sources(
    router: RunningRouter, retrieval: FixedRetrieval
) -> None:
    """The extractive provider quotes the sources (with their numbers), never the prompt
    scaffolding around them ("Sources:", the instructions)."""
    retrieval.put(
        "acme",
        "kb",
        [
            ("light", "The Harbor Lighthouse was built in 1874. It still guides ships."),
            ("bread", "Sourdough rises slowly overnight."),
        ],
    )
    conversation_id = await create(router, "acme", "ann", collection="kb", model="extractive")
    events = await send(router, "acme", "ann", conversation_id, "When was the lighthouse built?")
    reply = "".join(e.delta for e in events if e.WhichOneof("event") == "delta")
    assert "1874" in reply
    assert "[1]" in reply
    assert "Sources" not in reply
    assert "Answer using" not in reply
    citations = next(e for e in events if e.WhichOneof("event") == "citations")
    assert [c.document_id for c in citations.citations.items] == ["light"]


async def test_a_cancelled_reply_is_not_stored_and_cancels_the_upstream(
    router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    conversation_id = await create(router, "acme", "ann")
    fake_openai.enqueue(Reply(content="slow", delay=5))
    call = router.stub.SendMessage(
        llm_pb2.SendMessageRequest(
            tenant_id="acme", user_id="ann", conversation_id=conversation_id, content="Hi"
        )
    )
    while not fake_openai.requests:  # noqa: ASYNC110 - wait for the upstream request
        await asyncio.sleep(0.01)
    call.cancel()
    for _ in range(200):
        if fake_openai.disconnects:
            break
        await asyncio.sleep(0.01)
    assert fake_openai.disconnects == 1
    stored = await router.stub.GetConversation(
        llm_pb2.GetConversationRequest(
            tenant_id="acme", user_id="ann", conversation_id=conversation_id
        )
    )
    assert not stored.messages


async def test_an_unreachable_redis_is_unavailable_not_a_crash(
    fake_openai: FakeOpenAI, retrieval_server: tuple[FixedRetrieval, str]
) -> None:
    settings = openai_settings(
        fake_openai.base_url,
        retrieval_service_addr=retrieval_server[1],
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    running = await start_router(settings)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create(running, "acme", "ann")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "conversation store unavailable" in (caught.value.details() or "")
    finally:
        await stop_router(running)


async def test_admins_list_the_tenants_conversations_with_their_metadata(
    router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    """The router owns the metadata: owner, settings, size, creation, last activity and
    deletion; listed most recently active first, messages left out."""
    before = time.time()
    quiet = await create(router, "acme", "ann", title="quiet")
    busy = await create(router, "acme", "bob", title="busy", model="big")
    gone = await create(router, "acme", "ann", title="gone")
    await create(router, "globex", "ann", title="other tenant")
    fake_openai.enqueue(Reply(content="Hello"))
    await send(router, "acme", "bob", busy, "Hi")
    fake_openai.enqueue(Reply(content="Bye"))
    await send(router, "acme", "ann", gone, "Bye")
    await router.stub.DeleteConversation(
        llm_pb2.DeleteConversationRequest(tenant_id="acme", user_id="ann", conversation_id=gone)
    )

    async def listed(**fields: Any) -> list[llm_pb2.Conversation]:
        reply = await router.stub.ListTenantConversations(
            llm_pb2.ListTenantConversationsRequest(tenant_id="acme", **fields)
        )
        return list(reply.conversations)

    everyone = await listed()
    assert [(c.id, c.user_id, c.title, c.model, c.message_count) for c in everyone] == [
        (busy, "bob", "busy", "big", 2),
        (quiet, "ann", "quiet", "default", 0),
    ]
    assert not any(c.messages for c in everyone)
    assert before <= everyone[1].created_at == everyone[1].updated_at
    assert everyone[0].updated_at > everyone[0].created_at >= before
    assert all(c.deleted_at == 0 for c in everyone)

    with_deleted = await listed(include_deleted=True)
    assert [c.id for c in with_deleted] == [gone, busy, quiet]
    assert (with_deleted[0].message_count, with_deleted[0].user_id) == (2, "ann")
    assert with_deleted[0].deleted_at >= with_deleted[0].updated_at
    assert [c.id for c in await listed(user_id="ann", include_deleted=True)] == [gone, quiet]
    assert [c.id for c in await listed(user_id="ann")] == [quiet]
    assert [c.id for c in await listed(limit=1)] == [busy]

    # The owner's own view carries the same metadata.
    mine = await router.stub.GetConversation(
        llm_pb2.GetConversationRequest(tenant_id="acme", user_id="bob", conversation_id=busy)
    )
    assert (mine.user_id, mine.message_count, mine.updated_at) == (
        "bob",
        2,
        everyone[0].updated_at,
    )
    for bad in (
        llm_pb2.ListTenantConversationsRequest(),
        llm_pb2.ListTenantConversationsRequest(tenant_id="acme", limit=501),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await router.stub.ListTenantConversations(bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
