"""OpenAI's vector-store API with the official OpenAI SDK over the real path: the SDK over
TCP -> the gateway (uvicorn, its SQLite database holding the files) -> the fake retrieval
service (per-tenant collections and ingestion jobs, whose state a test can hold at running
or make fail) and the real llm-router, which answers ``file_search`` from the collection
through an OpenAI-protocol test server standing in for the hosted model.

The last test runs the same flow against the REAL retrieval service (Milvus Lite, the real
embedding server, its job worker): the statuses are those of real ingestion jobs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from aimesh_gateway.main import create_app
from aimesh_retrieval.config import Settings as RetrievalSettings
from aimesh_retrieval.jobs import JobStore
from aimesh_retrieval.store import MilvusStore
from tests.gateway.conftest import FakeMesh, serve_on_free_port
from tests.gateway.fakes import FakeRetrieval
from tests.gateway.helpers import assert_problem, bearer, settings_for, token
from tests.gateway.live_stack import gateway_on_router
from tests.llm_router.openai_server import FakeOpenAI, Reply
from tests.retrieval.conftest import serve

USAGE = {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}
LEAVE = b"# Leave\n\nEmployees get 30 days of leave per year."


@dataclass
class Mesh:
    upstream: FakeOpenAI
    retrieval: FakeRetrieval
    url: str


@pytest.fixture(scope="module")
async def mesh(
    fake_mesh: FakeMesh, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    upstream = FakeOpenAI()
    await upstream.start()
    data_dir: Path = tmp_path_factory.mktemp("vector-stores-router")
    models = {
        "default": {
            "provider": "openai",
            "model": "test-model",
            "base_url": upstream.base_url,
            "timeout_seconds": 30,
            "max_retries": 0,
        }
    }
    async with gateway_on_router(fake_mesh, {"models": models}, data_dir=data_dir) as url:
        yield Mesh(upstream, fake_mesh.retrieval, url)
    await upstream.stop()


def _client(mesh: Mesh, tenant: str) -> openai.AsyncOpenAI:
    key = token(tenant, ["editor", "user"], subject="ann")
    return openai.AsyncOpenAI(base_url=f"{mesh.url}/v1", api_key=key, max_retries=0)


@pytest.fixture
async def sdk(mesh: Mesh) -> AsyncIterator[openai.AsyncOpenAI]:
    mesh.upstream.reset()
    async with _client(mesh, "vs-t") as client:
        yield client
    mesh.retrieval.job_running_reads = 0
    mesh.retrieval.job_error = None


async def test_the_file_search_flow_from_upload_to_a_cited_answer(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    """files.create -> vector_stores.create -> files.create (an ingestion job, polled until
    completed) -> responses.create with file_search on vs.id: the citation names the file."""
    uploaded = await sdk.files.create(
        file=("leave-policy.md", LEAVE, "text/markdown"), purpose="assistants"
    )
    assert uploaded.id.startswith("file-")
    assert (uploaded.filename, uploaded.bytes, uploaded.purpose) == (
        "leave-policy.md",
        len(LEAVE),
        "assistants",
    )
    store = await sdk.vector_stores.create(name="Handbook", metadata={"team": "hr"})
    assert store.id.startswith("vs_")
    assert (store.name, store.metadata, store.status) == ("Handbook", {"team": "hr"}, "completed")
    assert store.file_counts.total == 0

    mesh.retrieval.job_running_reads = 2  # the job reports running twice before it is done
    added = await sdk.vector_stores.files.create(
        vector_store_id=store.id, file_id=uploaded.id, attributes={"lang": "en"}
    )
    assert (added.id, added.vector_store_id, added.status) == (uploaded.id, store.id, "in_progress")
    assert added.last_error is None
    during = await sdk.vector_stores.retrieve(store.id)
    assert (during.status, during.file_counts.in_progress) == ("in_progress", 1)
    done = await sdk.vector_stores.files.poll(
        uploaded.id, vector_store_id=store.id, max_wait_seconds=20
    )
    assert done.status == "completed"
    assert done.usage_bytes > 0
    assert done.attributes == {"lang": "en"}
    assert done.chunking_strategy is not None
    assert done.chunking_strategy.type == "static"
    after = await sdk.vector_stores.retrieve(store.id)
    assert after.status == "completed"
    assert (after.file_counts.completed, after.file_counts.total) == (1, 1)

    answer = "Employees get 30 days of leave per year [1]."
    mesh.upstream.enqueue(Reply(content=answer, usage=USAGE))
    response = await sdk.responses.create(
        model="default",
        input="How many days of leave?",
        tools=[{"type": "file_search", "vector_store_ids": [store.id]}],
        include=["file_search_call.results"],
    )
    assert "30 days of leave" in json.dumps(mesh.upstream.requests[-1].body["messages"])
    search, message = response.output
    assert search.type == "file_search_call"
    [result] = search.results or []
    assert (result.file_id, result.filename) == (uploaded.id, "leave-policy.md")
    assert result.attributes is not None
    assert result.attributes["lang"] == "en"
    assert message.type == "message"
    text = message.content[0]
    assert text.type == "output_text"
    [citation] = text.annotations
    assert citation.type == "file_citation"
    assert (citation.file_id, citation.filename) == (uploaded.id, "leave-policy.md")
    assert citation.index == answer.index("[1]") + len("[1]")
    # The cited file is the uploaded one.
    assert (await sdk.files.retrieve(citation.file_id)).filename == "leave-policy.md"


async def test_list_retrieve_search_and_delete(sdk: openai.AsyncOpenAI) -> None:
    first = await sdk.files.create(file=("a.txt", b"alpha bravo charlie"), purpose="user_data")
    second = await sdk.files.create(file=("b.txt", b"delta echo foxtrot"), purpose="assistants")
    assert (await sdk.files.content(first.id)).content == b"alpha bravo charlie"
    listed = [f.id async for f in sdk.files.list()]
    assert listed[:2] == [second.id, first.id]  # newest first
    user_data = [f.id async for f in sdk.files.list(purpose="user_data")]
    assert user_data[0] == first.id
    assert second.id not in user_data
    page = await sdk.files.list(limit=1, order="asc")
    assert page.has_more is True

    store = await sdk.vector_stores.create(name="Letters", file_ids=[first.id, second.id])
    assert (store.file_counts.completed, store.file_counts.total) == (2, 2)
    names = {s.id: s.name async for s in sdk.vector_stores.list()}
    assert names[store.id] == "Letters"
    files = [f.id async for f in sdk.vector_stores.files.list(store.id)]
    assert sorted(files) == sorted([first.id, second.id])
    assert [f.id async for f in sdk.vector_stores.files.list(store.id, filter="failed")] == []
    one = await sdk.vector_stores.files.retrieve(first.id, vector_store_id=store.id)
    assert one.status == "completed"

    found = await sdk.vector_stores.search(store.id, query="echo foxtrot", max_num_results=1)
    [hit] = found.data
    assert (hit.file_id, hit.filename) == (second.id, "b.txt")
    assert "echo foxtrot" in hit.content[0].text
    filtered = await sdk.vector_stores.search(
        store.id,
        query="echo foxtrot",
        filters={"type": "eq", "key": "filename", "value": "a.txt"},
    )
    assert {h.file_id for h in filtered.data} == {first.id}

    renamed = await sdk.vector_stores.update(store.id, name="Letters 2", metadata={"v": "2"})
    assert (renamed.name, renamed.metadata) == ("Letters 2", {"v": "2"})

    removed = await sdk.vector_stores.files.delete(second.id, vector_store_id=store.id)
    assert removed.deleted is True
    gone = await sdk.vector_stores.search(store.id, query="echo foxtrot")
    assert second.id not in {h.file_id for h in gone.data}
    with pytest.raises(openai.NotFoundError):
        await sdk.vector_stores.files.retrieve(second.id, vector_store_id=store.id)

    deleted = await sdk.vector_stores.delete(store.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        await sdk.vector_stores.retrieve(store.id)
    assert (await sdk.files.delete(first.id)).deleted is True
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.files.retrieve(first.id)
    assert first.id in missing.value.message
    # The uploaded file outlives the vector store it was in.
    assert (await sdk.files.retrieve(second.id)).id == second.id


async def test_vector_stores_page_both_ways(mesh: Mesh) -> None:
    async with _client(mesh, "vs-pages") as sdk:
        ids = [(await sdk.vector_stores.create(name=f"s{n}")).id for n in range(3)]
        newest_first = list(reversed(ids))
        first = await sdk.vector_stores.list(limit=2)
        assert ([s.id for s in first.data], first.has_more) == (newest_first[:2], True)
        rest = await sdk.vector_stores.list(limit=2, after=newest_first[1])
        assert ([s.id for s in rest.data], rest.has_more) == (newest_first[2:], False)
        back = await sdk.vector_stores.list(limit=1, before=newest_first[2])
        assert [s.id for s in back.data] == [newest_first[1]]
        oldest_first = await sdk.vector_stores.list(order="asc")
        assert [s.id for s in oldest_first.data] == ids
        assert [s.id async for s in sdk.vector_stores.list(limit=1)] == newest_first
        with pytest.raises(openai.BadRequestError) as unknown:
            await sdk.vector_stores.list(after="vs_nothing")
        assert "after" in unknown.value.message


async def test_batches_upload_and_poll(sdk: openai.AsyncOpenAI, mesh: Mesh) -> None:
    store = await sdk.vector_stores.create(name="Batch")
    mesh.retrieval.job_running_reads = 1
    batch = await sdk.vector_stores.file_batches.upload_and_poll(
        store.id,
        files=[("one.md", b"# One\n\nthe first file"), ("two.md", b"# Two\n\nthe second file")],
        poll_interval_ms=100,
    )
    assert batch.id.startswith("vsfb_")
    assert batch.status == "completed"
    assert (batch.file_counts.completed, batch.file_counts.total) == (2, 2)
    listed = [
        f.id
        async for f in sdk.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    ]
    assert len(listed) == 2
    with pytest.raises(openai.BadRequestError) as cancel:
        await sdk.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert "cancelling a batch is not supported" in cancel.value.message


async def test_failed_jobs_and_unreadable_files_are_failed_with_last_error(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    store = await sdk.vector_stores.create(name="Failures")
    text = await sdk.files.create(file=("note.txt", b"some text"), purpose="assistants")
    mesh.retrieval.job_error = "embedding service unavailable"
    failed = await sdk.vector_stores.files.create_and_poll(text.id, vector_store_id=store.id)
    assert failed.status == "failed"
    assert failed.last_error is not None
    assert failed.last_error.code == "server_error"
    assert "embedding service unavailable" in failed.last_error.message
    mesh.retrieval.job_error = None
    # A failed file is added again on request (a retry), and then completes.
    retried = await sdk.vector_stores.files.create_and_poll(text.id, vector_store_id=store.id)
    assert (retried.status, retried.last_error) == ("completed", None)

    broken = await sdk.files.create(file=("scan.pdf", b"not a pdf at all"), purpose="assistants")
    unreadable = await sdk.vector_stores.files.create(vector_store_id=store.id, file_id=broken.id)
    assert unreadable.status == "failed"
    assert unreadable.last_error is not None
    assert unreadable.last_error.code == "invalid_file"
    assert "scan.pdf" in unreadable.last_error.message
    counts = (await sdk.vector_stores.retrieve(store.id)).file_counts
    assert (counts.completed, counts.failed, counts.total) == (1, 1, 2)


async def test_unsupported_parameters_are_a_400_naming_them(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as expires:
        await sdk.vector_stores.create(
            name="x", expires_after={"anchor": "last_active_at", "days": 1}
        )
    assert "expires_after" in expires.value.message
    with pytest.raises(openai.BadRequestError) as chunking:
        await sdk.vector_stores.create(
            name="x",
            chunking_strategy={
                "type": "static",
                "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
            },
        )
    assert "chunking_strategy.static.max_chunk_size_tokens" in chunking.value.message
    store = await sdk.vector_stores.create(
        name="Small chunks",
        chunking_strategy={
            "type": "static",
            "static": {"max_chunk_size_tokens": 120, "chunk_overlap_tokens": 20},
        },
    )
    uploaded = await sdk.files.create(file=("c.txt", b"chunk me"), purpose="assistants")
    with pytest.raises(openai.BadRequestError) as per_file:
        await sdk.vector_stores.files.create(
            vector_store_id=store.id,
            file_id=uploaded.id,
            chunking_strategy={
                "type": "static",
                "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 20},
            },
        )
    assert "chunking_strategy" in per_file.value.message
    same = await sdk.vector_stores.files.create(
        vector_store_id=store.id,
        file_id=uploaded.id,
        chunking_strategy={
            "type": "static",
            "static": {"max_chunk_size_tokens": 120, "chunk_overlap_tokens": 20},
        },
    )
    assert same.chunking_strategy is not None
    assert same.chunking_strategy.static.max_chunk_size_tokens == 120  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError) as attributes:
        await sdk.vector_stores.files.update(
            uploaded.id, vector_store_id=store.id, attributes={"a": "b"}
        )
    assert "attributes" in attributes.value.message
    with pytest.raises(openai.BadRequestError) as purpose:
        await sdk.files.create(file=("d.jsonl", b"{}"), purpose="batch")
    assert "purpose" in purpose.value.message
    with pytest.raises(openai.BadRequestError) as file_expiry:
        await sdk.files.create(
            file=("e.txt", b"text"),
            purpose="assistants",
            expires_after={"anchor": "created_at", "seconds": 3600},
        )
    assert "expires_after" in file_expiry.value.message
    with pytest.raises(openai.APIStatusError) as kind:
        await sdk.files.create(file=("tool.exe", b"MZ"), purpose="assistants")
    assert kind.value.status_code == 415
    assert "tool.exe" in kind.value.message
    with pytest.raises(openai.BadRequestError) as rewrite:
        await sdk.vector_stores.search(store.id, query="q", rewrite_query=True)
    assert "rewrite_query" in rewrite.value.message


async def test_unknown_ids_and_other_tenants_are_404_problems(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    uploaded = await sdk.files.create(
        file=("secret.txt", b"the safe code is 1234"), purpose="assistants"
    )
    store = await sdk.vector_stores.create(name="Mine", file_ids=[uploaded.id])
    with pytest.raises(openai.NotFoundError) as unknown:
        await sdk.vector_stores.files.create(vector_store_id=store.id, file_id="file-unknown")
    assert "file-unknown" in unknown.value.message
    with pytest.raises(openai.NotFoundError):
        await sdk.vector_stores.create(name="x", file_ids=["file-unknown"])

    async with _client(mesh, "vs-other") as other:
        for call in (
            other.files.retrieve(uploaded.id),
            other.files.content(uploaded.id),
            other.files.delete(uploaded.id),
            other.vector_stores.retrieve(store.id),
            other.vector_stores.delete(store.id),
            other.vector_stores.files.retrieve(uploaded.id, vector_store_id=store.id),
            other.vector_stores.search(store.id, query="safe code"),
        ):
            with pytest.raises(openai.NotFoundError):
                await call
        assert uploaded.id not in [f.id async for f in other.files.list()]
        assert store.id not in [s.id async for s in other.vector_stores.list()]
        # Its own vector store cannot take the other tenant's file.
        own = await other.vector_stores.create(name="Theirs")
        with pytest.raises(openai.NotFoundError):
            await other.vector_stores.files.create(vector_store_id=own.id, file_id=uploaded.id)
        with pytest.raises(openai.NotFoundError):
            await other.responses.create(
                model="default",
                input="What is the safe code?",
                tools=[{"type": "file_search", "vector_store_ids": [store.id]}],
            )

    # The errors are problem+json documents with OpenAI's error object inside.
    async with httpx.AsyncClient(base_url=mesh.url) as http:
        headers = bearer(token("vs-t", ["editor", "user"]))
        missing = await http.get("/v1/files/file-nothing", headers=headers)
        assert_problem(missing, 404)
        assert missing.json()["error"]["type"] == "not_found_error"
        bad = await http.post(
            f"/v1/vector_stores/{store.id}/files",
            json={"file_id": "file-x", "bogus": 1},
            headers=headers,
        )
        assert_problem(bad, 422)
        assert "bogus" in bad.json()["detail"]
        wrong_role = await http.post(
            "/v1/vector_stores", json={"name": "x"}, headers=bearer(token("vs-t", ["user"]))
        )
        assert_problem(wrong_role, 403)
    # The owner still has everything.
    assert (await sdk.vector_stores.retrieve(store.id)).file_counts.completed == 1
    assert (await sdk.files.retrieve(uploaded.id)).filename == "secret.txt"


async def test_a_native_collection_is_a_vector_store_by_its_name(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    async with httpx.AsyncClient(base_url=mesh.url) as http:
        headers = bearer(token("vs-t", ["editor", "user"]))
        created = await http.post("/v1/collections", json={"name": "native-docs"}, headers=headers)
        assert created.status_code == 201, created.text
        store = await sdk.vector_stores.retrieve("native-docs")
        assert (store.id, store.name, store.created_at) == ("native-docs", "native-docs", 0)
        uploaded = await sdk.files.create(file=("n.txt", b"native text"), purpose="assistants")
        added = await sdk.vector_stores.files.create_and_poll(
            uploaded.id, vector_store_id="native-docs"
        )
        assert added.status == "completed"
        # Deleting the collection natively forgets its vector-store records too.
        dropped = await http.delete("/v1/collections/native-docs", headers=headers)
        assert dropped.status_code == 204
        again = await http.post("/v1/collections", json={"name": "native-docs"}, headers=headers)
        assert again.status_code == 201
    assert [f async for f in sdk.vector_stores.files.list("native-docs")] == []


@pytest.fixture(scope="module")
async def real_url(
    embedding_addr: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """The gateway (uvicorn) in front of the real retrieval service and its job worker."""
    data: Path = tmp_path_factory.mktemp("vector-stores-retrieval")
    store = MilvusStore.open(RetrievalSettings(data_dir=data))
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{data / 'jobs.db'}")
    async for retrieval in serve(store, embedding_addr, jobs):
        gateway = create_app(
            settings_for(
                router_addr=embedding_addr,  # no answers here: only the retrieval routes
                retrieval_addr=retrieval.address,
                embedding_addr=embedding_addr,
            )
        )
        async with serve_on_free_port(gateway) as url:
            yield url
    await jobs.close()
    await store.close()


async def test_real_ingestion_jobs_drive_the_file_status(real_url: str) -> None:
    key = token("vs-real", ["editor", "user"])
    async with openai.AsyncOpenAI(base_url=f"{real_url}/v1", api_key=key, max_retries=0) as sdk:
        leave = await sdk.files.create(file=("leave.md", LEAVE), purpose="assistants")
        travel = await sdk.files.create(
            file=("travel.txt", b"Train tickets are refunded within two weeks."),
            purpose="assistants",
        )
        store = await sdk.vector_stores.create(name="Real", file_ids=[leave.id])
        assert store.file_counts.total == 1
        first = await sdk.vector_stores.files.poll(
            leave.id, vector_store_id=store.id, poll_interval_ms=100, max_wait_seconds=60
        )
        assert (first.status, first.last_error) == ("completed", None)
        second = await sdk.vector_stores.files.create_and_poll(
            travel.id,
            vector_store_id=store.id,
            attributes={"kind": "travel"},
            poll_interval_ms=100,
            max_wait_seconds=60,
        )
        assert second.status == "completed"
        counts = (await sdk.vector_stores.retrieve(store.id)).file_counts
        assert (counts.completed, counts.total) == (2, 2)

        found = await sdk.vector_stores.search(store.id, query="how many days of leave")
        assert found.data[0].file_id == leave.id
        assert found.data[0].filename == "leave.md"
        travel_only = await sdk.vector_stores.search(
            store.id,
            query="refund",
            filters={"type": "eq", "key": "kind", "value": "travel"},
        )
        assert {hit.file_id for hit in travel_only.data} == {travel.id}

        await sdk.vector_stores.files.delete(leave.id, vector_store_id=store.id)
        after = await sdk.vector_stores.search(store.id, query="how many days of leave")
        assert leave.id not in {hit.file_id for hit in after.data}
        await sdk.vector_stores.delete(store.id)
        with pytest.raises(openai.NotFoundError):
            await sdk.vector_stores.search(store.id, query="refund")
