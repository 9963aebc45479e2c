"""Stored responses of the Responses API in the conversation store: SQLite, the real
PostgreSQL and real Redis; owned by one user of one tenant, gone after the retention, and
the StoreResponse/GetResponse/DeleteResponse RPCs over real gRPC."""

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
from aimesh_common.errors import AlreadyExists, NotFound
from aimesh_llm_router.conversations import (
    ConversationStore,
    RedisConversationStore,
    ResponseRecord,
    SqlConversationStore,
)
from tests.conftest import new_postgres_database
from tests.llm_router.conftest import (
    FixedRetrieval,
    RunningRouter,
    models_config,
    openai_model,
    openai_settings,
    start_router,
    stop_router,
)
from tests.llm_router.openai_server import FakeOpenAI

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConversationStore]:
    prefix = f"aimesh-test:{uuid.uuid4().hex}:"
    async with contextlib.AsyncExitStack() as stack:
        opened: ConversationStore
        if request.param == "redis":
            opened = RedisConversationStore(REDIS_URL, prefix)
        elif request.param == "postgres":
            url = await stack.enter_async_context(new_postgres_database("aimesh_router"))
            opened = SqlConversationStore(url)
        else:
            opened = SqlConversationStore(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
        await opened.start()
        yield opened
        await opened.aclose()
    if request.param == "redis":
        client = redis_asyncio.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def _record(tenant: str, user: str, *, lifetime: float = 60.0, **fields: str) -> ResponseRecord:
    now = time.time()
    values = {
        "id": f"resp_{uuid.uuid4().hex}",
        "previous_response_id": "",
        "response_json": '{"object": "response"}',
        "input_items_json": '[{"type": "message"}]',
        "context_json": '[{"role": "user", "content": "hi"}]',
        **fields,
    }
    return ResponseRecord(
        tenant_id=tenant,
        user_id=user,
        created_at=now,
        expires_at=now + lifetime,
        **values,
    )


async def test_a_response_is_kept_for_its_owner_only(store: ConversationStore) -> None:
    record = _record("acme", "ann", previous_response_id="resp_before")
    await store.put_response(record)
    assert await store.get_response("acme", "ann", record.id) == record
    for tenant, user in (("other", "ann"), ("acme", "bob")):
        with pytest.raises(NotFound, match=record.id):
            await store.get_response(tenant, user, record.id)
        with pytest.raises(NotFound):
            await store.delete_response(tenant, user, record.id)
    with pytest.raises(AlreadyExists):
        await store.put_response(_record("other", "eve", id=record.id))
    assert (await store.get_response("acme", "ann", record.id)).tenant_id == "acme"
    await store.delete_response("acme", "ann", record.id)
    with pytest.raises(NotFound):
        await store.get_response("acme", "ann", record.id)
    with pytest.raises(NotFound):
        await store.delete_response("acme", "ann", record.id)


async def test_a_response_past_its_retention_is_gone(store: ConversationStore) -> None:
    short = _record("acme", "ann", lifetime=0.3)
    kept = _record("acme", "ann")
    await store.put_response(short)
    await store.put_response(kept)
    assert (await store.get_response("acme", "ann", short.id)).id == short.id
    await asyncio.sleep(0.4)
    with pytest.raises(NotFound):
        await store.get_response("acme", "ann", short.id)
    # Storing purges the expired ones (SQL) or the TTL did (Redis): the id is free again.
    await store.put_response(_record("acme", "ann", id=short.id))
    assert (await store.get_response("acme", "ann", kept.id)).id == kept.id


@pytest.fixture(scope="module")
async def router(
    tmp_path_factory: pytest.TempPathFactory,
    fake_openai_server: FakeOpenAI,
    retrieval_server: tuple[FixedRetrieval, str],
) -> AsyncIterator[RunningRouter]:
    settings = openai_settings(
        fake_openai_server.base_url,
        retrieval_service_addr=retrieval_server[1],
        data_dir=tmp_path_factory.mktemp("responses-router"),
        responses_retention_seconds=3600,
    )
    running = await start_router(
        settings, models_config({"default": openai_model(fake_openai_server.base_url)})
    )
    yield running
    await stop_router(running)


async def test_the_rpcs_store_read_and_delete_with_the_routers_retention(
    router: RunningRouter,
) -> None:
    sent = llm_pb2.StoredResponse(
        id="resp_1",
        tenant_id="acme",
        user_id="ann",
        created_at=1000.0,
        response_json="{}",
        input_items_json="[]",
        context_json="[]",
    )
    before = time.time()
    stored = await router.stub.StoreResponse(sent)
    assert before + 3600 <= stored.expires_at <= time.time() + 3600
    read = await router.stub.GetResponse(
        llm_pb2.GetResponseRequest(tenant_id="acme", user_id="ann", response_id="resp_1")
    )
    assert read == stored
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await router.stub.StoreResponse(sent)
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await router.stub.GetResponse(
            llm_pb2.GetResponseRequest(tenant_id="evil", user_id="ann", response_id="resp_1")
        )
    assert other.value.code() == grpc.StatusCode.NOT_FOUND
    await router.stub.DeleteResponse(
        llm_pb2.GetResponseRequest(tenant_id="acme", user_id="ann", response_id="resp_1")
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await router.stub.GetResponse(
            llm_pb2.GetResponseRequest(tenant_id="acme", user_id="ann", response_id="resp_1")
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"tenant_id": ""}, "tenant_id"),
        ({"user_id": ""}, "user_id"),
        ({"id": ""}, "id"),
        ({"id": "r" * 129}, "id"),
        ({"response_json": "{"}, "response_json"),
        ({"context_json": ""}, "context_json"),
    ],
)
async def test_invalid_stores_name_the_field(
    router: RunningRouter, fields: dict[str, str], named: str
) -> None:
    values: dict[str, Any] = {
        "id": "resp_x",
        "tenant_id": "acme",
        "user_id": "ann",
        "response_json": "{}",
        "input_items_json": "[]",
        "context_json": "[]",
        **fields,
    }
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await router.stub.StoreResponse(llm_pb2.StoredResponse(**values))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in (refused.value.details() or "")
