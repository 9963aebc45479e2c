"""Background ingestion jobs: the SQL job store (SQLite and PostgreSQL) and the service.

The last test runs the retrieval service as a real process, kills it with SIGKILL in the
middle of a job, starts it again on the same data and checks that the job completes with
every document stored exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from aimesh.retrieval.v1 import retrieval_pb2 as pb
from aimesh.retrieval.v1 import retrieval_pb2_grpc
from aimesh_common.channels import check_health, create_channel
from aimesh_common.errors import InvalidArgument, NotFound
from aimesh_retrieval.config import Settings
from aimesh_retrieval.jobs import (
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Job,
    JobDocument,
    JobRunner,
    JobStore,
    LeaseLost,
    PrepareBatch,
    Settle,
    WriteBatch,
)
from aimesh_retrieval.store import CollectionRef, MilvusStore
from tests.conftest import free_port, new_postgres_database
from tests.retrieval.conftest import Retrieval, new_collection, serve


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def job_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[JobStore]:
    """The store on a new SQLite file, or on a new database of the real PostgreSQL."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "postgres":
            url = await stack.enter_async_context(new_postgres_database("aimesh_jobs"))
        else:
            url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('jobs') / 'jobs.db'}"
        # 96 chunks per batch: 32 of the tests' 3-chunk documents.
        store = await JobStore.open(url, batch_chunks=96)
        yield store
        await store.close()


def docs(count: int, prefix: str = "d") -> list[JobDocument]:
    return [JobDocument(f"{prefix}{i}", f"text {i}", {"i": i}, chunks=3) for i in range(count)]


async def test_submission_is_all_or_nothing(job_store: JobStore) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    failed: list[str] = []

    async def submit_then_fail() -> None:
        async with job_store.submission() as submission:
            failed.append(submission.id)
            submission.target(tenant, "c")
            await submission.add(docs(3))
            raise RuntimeError("invalid document")

    with pytest.raises(RuntimeError):
        await submit_then_fail()
    with pytest.raises(NotFound):
        await job_store.get(tenant, failed[0])

    async with job_store.submission() as submission:
        submission.target(tenant, "c")
        await submission.add(docs(40))
    job = await job_store.get(tenant, submission.id)
    assert (job.state, job.documents_total, job.chunks_total) == (QUEUED, 40, 120)
    with pytest.raises(NotFound, match="not found"):
        await job_store.get("other-tenant", submission.id)


async def test_claim_batches_progress_and_lease(job_store: JobStore) -> None:
    # Drain older queued jobs of this store (other tests) first.
    while (await job_store.claim("drain", 3600)) is not None:
        pass
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    async with job_store.submission() as submission:
        submission.target(tenant, "c")
        await submission.add(docs(100))
    job = await job_store.claim("runner-1", 60)
    assert job is not None
    assert (job.id, job.state) == (submission.id, RUNNING)
    # Claimed with a live lease: nobody else gets it.
    assert await job_store.claim("runner-2", 60) is None

    batch = await job_store.next_batch(job.id)
    # At most 96 chunks (3 each): 32 documents.
    assert [seq for seq, _ in batch] == list(range(32))
    seqs = [seq for seq, _ in batch]
    assert await job_store.mark_done(job.id, "runner-1", seqs, 0.0) == 96
    progressed = await job_store.get(tenant, job.id)
    assert (progressed.documents_done, progressed.chunks_embedded) == (32, 96)
    # The lease was renewed with 0 s: it ran out, so another runner takes over and
    # continues with the first document not done.
    taken = await job_store.claim("runner-2", 60)
    assert taken is not None
    assert taken.id == job.id
    assert (await job_store.next_batch(job.id))[0][0] == 32

    # The old runner is fenced: its heartbeat, progress, attempts and end are refused.
    with pytest.raises(LeaseLost):
        await job_store.renew(job.id, "runner-1", 60)
    with pytest.raises(LeaseLost):
        await job_store.mark_done(job.id, "runner-1", [32, 33], 60)
    with pytest.raises(LeaseLost):
        await job_store.failed_attempt(job.id, "late", owner="runner-1")
    with pytest.raises(LeaseLost):
        await job_store.finish(job.id, SUCCEEDED, owner="runner-1")
    # The new one marking documents already done counts each once.
    await job_store.renew(job.id, "runner-2", 60)
    assert await job_store.mark_done(job.id, "runner-2", [30, 31, 32], 60) == 3
    progressed = await job_store.get(tenant, job.id)
    assert (progressed.documents_done, progressed.chunks_embedded) == (33, 99)

    await job_store.finish(job.id, FAILED, "embedding service unavailable", owner="runner-2")
    final = await job_store.get(tenant, job.id)
    assert (final.state, final.errors) == (FAILED, ["embedding service unavailable"])


def submit_requests(
    tenant: str, collection: str, documents: list[tuple[str, str, dict[str, Any]]], per: int
) -> list[pb.SubmitIngestJobRequest]:
    parts = []
    for start in range(0, len(documents), per):
        part = pb.SubmitIngestJobRequest(tenant_id=tenant if start == 0 else "")
        part.collection = collection if start == 0 else ""
        for doc_id, body, meta in documents[start : start + per]:
            document = part.documents.add(id=doc_id, text=body)
            document.metadata.update(meta)
        parts.append(part)
    return parts


async def wait_for_job(
    stub: retrieval_pb2_grpc.RetrievalServiceAsyncStub, tenant: str, job_id: str
) -> pb.IngestJob:
    deadline = time.monotonic() + 120
    while True:
        job = await stub.GetIngestJob(pb.GetIngestJobRequest(tenant_id=tenant, job_id=job_id))
        if job.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.2)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_job_through_the_service(retrieval: Retrieval) -> None:
    submitted = _sample("aimesh_retrieval_jobs_submitted_total")
    succeeded = _sample("aimesh_retrieval_jobs_finished_total", outcome="succeeded")
    embedded = _sample("aimesh_retrieval_job_chunks_embedded_total")
    timed = _sample("aimesh_retrieval_job_duration_seconds_count", outcome="succeeded")
    collection = new_collection()
    documents: list[tuple[str, str, dict[str, Any]]] = [
        (f"doc-{i}", " ".join(f"Sentence {j} of document {i} about tides." for j in range(12)), {})
        for i in range(10)
    ]
    job = await retrieval.stub.SubmitIngestJob(
        iter(submit_requests("tenant-a", collection, documents, per=3))
    )
    assert job.state == pb.JOB_STATE_QUEUED
    assert (job.documents_total, job.collection) == (10, collection)
    assert job.chunks_total >= 20
    done = await wait_for_job(retrieval.stub, "tenant-a", job.id)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.errors
    assert (done.documents_done, done.chunks_embedded) == (10, job.chunks_total)
    assert _sample("aimesh_retrieval_jobs_submitted_total") == submitted + 1
    assert _sample("aimesh_retrieval_jobs_finished_total", outcome="succeeded") == succeeded + 1
    assert _sample("aimesh_retrieval_job_chunks_embedded_total") == embedded + job.chunks_total
    assert _sample("aimesh_retrieval_job_duration_seconds_count", outcome="succeeded") == (
        timed + 1
    )
    # The runner reports the job table by state before each claim (every poll at least).
    deadline = time.monotonic() + 5
    while _sample("aimesh_retrieval_jobs", state="succeeded") < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    ref = CollectionRef("tenant-a", collection)
    assert sum([await retrieval.store.count_chunks(ref, d[0]) for d in documents]) == (
        job.chunks_total
    )
    other = await _error(
        retrieval.stub.GetIngestJob(pb.GetIngestJobRequest(tenant_id="tenant-b", job_id=job.id))
    )
    assert other.code() == grpc.StatusCode.NOT_FOUND


async def test_a_job_of_many_small_documents_runs_in_steps_of_chunks(
    retrieval: Retrieval,
) -> None:
    """A job's step is bounded by chunks, not by the per-request document limit."""
    limit = retrieval.settings.max_documents_per_request
    count = limit + 50
    collection = new_collection()
    documents: list[tuple[str, str, dict[str, Any]]] = [
        (f"note-{i}", f"Short note {i} on the harbour tides.", {}) for i in range(count)
    ]
    job = await retrieval.stub.SubmitIngestJob(
        iter(submit_requests("tenant-a", collection, documents, per=50))
    )
    done = await wait_for_job(retrieval.stub, "tenant-a", job.id)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.errors
    assert (done.documents_done, done.chunks_embedded) == (count, count)
    listed = await retrieval.stub.ListDocuments(
        pb.ListDocumentsRequest(tenant_id="tenant-a", collection=collection, limit=1000)
    )
    assert len(listed.documents) == count


async def test_invalid_job_creates_nothing(retrieval: Retrieval) -> None:
    collection = new_collection()
    documents: list[tuple[str, str, dict[str, Any]]] = [("ok", "Fine.", {}), ("bad", " ", {})]
    error = await _error(
        retrieval.stub.SubmitIngestJob(iter(submit_requests("tenant-a", collection, documents, 1)))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "documents[1].text must not be empty"
    duplicate: list[tuple[str, str, dict[str, Any]]] = [("same", "1.", {}), ("same", "2.", {})]
    error = await _error(
        retrieval.stub.SubmitIngestJob(iter(submit_requests("tenant-a", collection, duplicate, 2)))
    )
    assert error.details() == "documents[1].id repeats the id of an earlier document"
    split = await _error(
        retrieval.stub.SubmitIngestJob(iter(submit_requests("tenant-a", collection, duplicate, 1)))
    )
    assert split.details() == "documents[1].id repeats the id of an earlier document"
    assert await retrieval.store.dimension(CollectionRef("tenant-a", collection)) is None


@pytest.mark.slow
async def test_job_resumes_after_the_process_is_killed(embedding_addr: str, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMESH_")}
    env.pop("EMBEDDING_SERVICE_ADDR", None)
    env.update(
        AIMESH_PORT=str(port),
        AIMESH_METRICS_PORT="0",
        AIMESH_DATA_DIR=str(tmp_path),
        EMBEDDING_SERVICE_ADDR=embedding_addr,
        AIMESH_JOB_LEASE_SECONDS="2",
        AIMESH_EMBED_BATCH_SIZE="8",
        AIMESH_CHUNK_SIZE="40",
        AIMESH_CHUNK_OVERLAP="5",
        AIMESH_JOB_BATCH_CHUNKS="48",  # several steps, so the kill lands mid-job
    )

    async def start() -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aimesh_retrieval.main",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with create_channel(f"127.0.0.1:{port}") as channel:
            deadline = time.monotonic() + 60
            while not await check_health(channel, "aimesh.retrieval.v1.RetrievalService"):
                assert process.returncode is None
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        return process

    collection = new_collection()
    documents: list[tuple[str, str, dict[str, Any]]] = [
        (f"doc-{i}", " ".join(f"Line {j} of report {i} on harbour tides." for j in range(20)), {})
        for i in range(60)
    ]
    process = await start()
    try:
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            job = await stub.SubmitIngestJob(
                iter(submit_requests("tenant-a", collection, documents, 20))
            )
            deadline = time.monotonic() + 60
            while True:
                seen = await stub.GetIngestJob(
                    pb.GetIngestJobRequest(tenant_id="tenant-a", job_id=job.id)
                )
                if seen.documents_done > 0:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        assert seen.documents_done < seen.documents_total, "job finished before the kill"
        process.send_signal(signal.SIGKILL)
        await process.wait()

        process = await start()
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            done = await wait_for_job(stub, "tenant-a", job.id)
            assert done.state == pb.JOB_STATE_SUCCEEDED, done.errors
            assert done.documents_done == done.documents_total == 60
            listed = await stub.ListDocuments(
                pb.ListDocumentsRequest(tenant_id="tenant-a", collection=collection, limit=1000)
            )
            assert len(listed.documents) == 60
            total = sum(d.chunks for d in listed.documents)
            assert total == job.chunks_total
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
    # No duplicates: every chunk row is one of the listed documents' chunks.
    store = MilvusStore.open(Settings(data_dir=tmp_path))
    try:
        ref = CollectionRef("tenant-a", collection)
        await store.require(ref)  # loads the collection, released after the restart
        counts = [await store.count_chunks(ref, doc_id) for doc_id, _, _ in documents]
        assert sum(counts) == job.chunks_total
    finally:
        await store.close()


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def run_to_end(
    jobs: JobStore,
    prepare_batch: PrepareBatch,
    write_batch: WriteBatch,
    settle: Settle,
    tenant: str,
    job_id: str,
) -> Job:
    """Run a job runner with these steps until the job succeeded or failed (30 s at most);
    closes ``jobs``."""
    runner = JobRunner(jobs, prepare_batch, write_batch, settle, poll=0.05)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while (job := await jobs.get(tenant, job_id)).state not in (SUCCEEDED, FAILED):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        await runner.stop()
        await jobs.close()
    return job


def test_states_are_distinct() -> None:
    assert len({QUEUED, RUNNING, SUCCEEDED, FAILED}) == 4


async def test_a_job_settles_its_writes_before_it_succeeds(tmp_path: Path) -> None:
    """The runner waits for the writes to be searchable everywhere, then says SUCCEEDED."""
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", batch_chunks=96)
    events: list[str] = []

    async def prepare_batch(tenant: str, collection: str, documents: Any) -> Any:
        events.append(f"prepare {len(documents)}")
        return documents

    async def write_batch(documents: Any) -> int:
        events.append(f"write {len(documents)}")
        return 3 * len(documents)

    async def settle(tenant: str, collection: str) -> None:
        job = await jobs.get(tenant, submission.id)
        events.append(f"settle {tenant}/{collection} while {job.state}")

    async with jobs.submission() as submission:
        submission.target("tenant-s", "c")
        await submission.add(docs(40))
    job = await run_to_end(jobs, prepare_batch, write_batch, settle, "tenant-s", submission.id)
    assert job.state == SUCCEEDED
    # The second batch is prepared while the first is written; writes stay in order.
    assert events[-1] == f"settle tenant-s/c while {RUNNING}"
    assert [e for e in events if e.startswith("write")] == ["write 32", "write 8"]
    assert sorted(e for e in events if e.startswith("prepare")) == ["prepare 32", "prepare 8"]
    assert events.index("prepare 8") < events.index("write 8")


async def test_a_failed_settle_fails_the_job_visibly(tmp_path: Path) -> None:
    invalid = _sample("aimesh_retrieval_job_failures_total", reason="invalid")
    failed = _sample("aimesh_retrieval_jobs_finished_total", outcome="failed")
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", batch_chunks=96)

    async def prepare_batch(tenant: str, collection: str, documents: Any) -> Any:
        return documents

    async def write_batch(documents: Any) -> int:
        return len(documents)

    async def settle(tenant: str, collection: str) -> None:
        raise NotFound("collection 'c' not found")

    async with jobs.submission() as submission:
        submission.target("tenant-s", "c")
        await submission.add(docs(2))
    job = await run_to_end(jobs, prepare_batch, write_batch, settle, "tenant-s", submission.id)
    assert (job.state, job.errors) == (FAILED, ["collection 'c' not found"])
    assert _sample("aimesh_retrieval_job_failures_total", reason="invalid") == invalid + 1
    assert _sample("aimesh_retrieval_jobs_finished_total", outcome="failed") == failed + 1


async def test_the_next_batch_is_embedded_while_the_previous_one_is_written(
    tmp_path: Path,
) -> None:
    """Pipelining: the write of batch 1 waits until batch 2 is being prepared (so without
    the overlap this test fails on the timeout instead of passing)."""
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", batch_chunks=96)
    second_prepared = asyncio.Event()
    written: list[int] = []

    async def prepare_batch(tenant: str, collection: str, documents: Any) -> Any:
        if written == [] and documents[0].id == "d32":
            second_prepared.set()
        return documents

    async def write_batch(documents: Any) -> int:
        if not written:
            await asyncio.wait_for(second_prepared.wait(), 10)
        written.append(len(documents))
        return len(documents)

    async def settle(tenant: str, collection: str) -> None:
        return None

    async with jobs.submission() as submission:
        submission.target("tenant-p", "c")
        await submission.add(docs(70))
    job = await run_to_end(jobs, prepare_batch, write_batch, settle, "tenant-p", submission.id)
    assert (job.state, job.errors) == (SUCCEEDED, [])
    assert written == [32, 32, 6]
    # Chunks are counted from the submission (3 per document), once per document.
    assert (job.documents_done, job.chunks_embedded) == (70, 210)


async def test_a_failing_preparation_keeps_the_batches_written_before_it(tmp_path: Path) -> None:
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", batch_chunks=96)

    async def prepare_batch(tenant: str, collection: str, documents: Any) -> Any:
        if documents[0].id == "d32":
            raise InvalidArgument("documents[0].text is not what the test wants")
        return documents

    async def write_batch(documents: Any) -> int:
        return len(documents)

    async def settle(tenant: str, collection: str) -> None:
        raise AssertionError("a failed job does not settle")

    async with jobs.submission() as submission:
        submission.target("tenant-f", "c")
        await submission.add(docs(40))
    job = await run_to_end(jobs, prepare_batch, write_batch, settle, "tenant-f", submission.id)
    assert (job.state, job.errors) == (FAILED, ["documents[0].text is not what the test wants"])
    assert job.documents_done == 32


# ---------------------------------------------------------------- the submitter's trace


async def _record_contexts(
    jobs: JobStore, tenant: str, job_id: str, into: list[SpanContext]
) -> Job:
    """Run the job to its end, recording the span context each batch is prepared in."""

    async def prepare_batch(tenant: str, collection: str, documents: Any) -> Any:
        into.append(trace.get_current_span().get_span_context())
        return documents

    async def write_batch(documents: Any) -> int:
        return sum(document.chunks for document in documents)

    async def settle(tenant: str, collection: str) -> None:
        pass

    return await run_to_end(jobs, prepare_batch, write_batch, settle, tenant, job_id)


async def test_the_runner_continues_the_trace_of_the_submitting_request(tmp_path: Path) -> None:
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", batch_chunks=96)
    with TracerProvider().get_tracer("test").start_as_current_span("submit") as submit:
        async with jobs.submission() as submission:
            submission.target("tenant-t", "c")
            await submission.add(docs(40))
    submitted = submit.get_span_context()
    stored = await jobs.get("tenant-t", submission.id)
    assert stored.traceparent is not None
    assert stored.traceparent.startswith(f"00-{submitted.trace_id:032x}-{submitted.span_id:016x}-")
    seen: list[SpanContext] = []
    job = await _record_contexts(jobs, "tenant-t", submission.id, seen)
    assert job.state == SUCCEEDED
    assert len(seen) == 2  # two batches, prepared in two tasks, both in the trace
    assert {(c.trace_id, c.span_id, c.is_remote) for c in seen} == {
        (submitted.trace_id, submitted.span_id, True)
    }


async def test_a_job_submitted_outside_a_trace_runs_outside_one(tmp_path: Path) -> None:
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", batch_chunks=96)
    async with jobs.submission() as submission:
        submission.target("tenant-u", "c")
        await submission.add(docs(3))
    assert (await jobs.get("tenant-u", submission.id)).traceparent is None
    seen: list[SpanContext] = []
    assert (await _record_contexts(jobs, "tenant-u", submission.id, seen)).state == SUCCEEDED
    assert [context.is_valid for context in seen] == [False]


async def test_a_job_table_of_an_older_version_gets_the_trace_column(tmp_path: Path) -> None:
    """A database at revision 0001 (before jobs kept their trace) is brought to 0002 by the
    next start; its jobs keep their data and have no trace."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    jobs = await JobStore.open(url)
    async with jobs.submission() as submission:
        submission.target("tenant-v", "c")
        await submission.add(docs(1))
    await jobs.close()
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text("ALTER TABLE retrieval_ingest_jobs DROP COLUMN traceparent"))
        await connection.execute(text("UPDATE alembic_version_retrieval SET version_num = '0001'"))
    await engine.dispose()
    jobs = await JobStore.open(url)
    try:
        old = await jobs.get("tenant-v", submission.id)
        assert (old.documents_total, old.traceparent) == (1, None)
    finally:
        await jobs.close()


async def test_a_jobs_embedding_calls_are_in_the_trace_of_its_upload(
    retrieval_store: MilvusStore, embedding_addr: str, tmp_path: Path
) -> None:
    """Through the service: the job's Embed calls, made by the runner after the submitting
    RPC ended, are CLIENT spans in that RPC's trace, children of its server span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    trace_id = uuid.uuid4().hex
    documents: list[tuple[str, str, dict[str, Any]]] = [
        (f"doc-{i}", f"Document {i} is about the tides of the northern sea.", {}) for i in range(3)
    ]
    servers = serve(retrieval_store, embedding_addr, jobs, provider)
    running = await anext(servers)
    try:
        job = await running.stub.SubmitIngestJob(
            iter(submit_requests("tenant-w", new_collection(), documents, per=3)),
            metadata=(("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),),
        )
        done = await wait_for_job(running.stub, "tenant-w", job.id)
        assert done.state == pb.JOB_STATE_SUCCEEDED, done.errors
    finally:
        async for _ in servers:  # runs to the end: stops the server
            pass
        await jobs.close()
        provider.shutdown()
    spans = exporter.get_finished_spans()
    [submit] = [s for s in spans if s.name.endswith("/SubmitIngestJob")]
    assert (submit.kind, format(submit.context.trace_id, "032x")) == (SpanKind.SERVER, trace_id)
    embeds = [
        s
        for s in spans
        if s.name == "/aimesh.embedding.v1.EmbeddingService/Embed" and s.kind == SpanKind.CLIENT
    ]
    assert embeds
    for embed in embeds:
        assert embed.context.trace_id == submit.context.trace_id
        assert embed.parent is not None
        assert embed.parent.span_id == submit.context.span_id


async def test_a_step_longer_than_the_lease_runs_once_on_one_of_two_runners(
    tmp_path: Path,
) -> None:
    """Issue 21: with two runners and a step slower than the lease, the lease is renewed
    while the step runs, so the other runner never takes the job: every document is
    prepared (embedded) and written once and the counters end at their totals."""
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", batch_chunks=6)
    prepared: list[str] = []
    written: list[str] = []

    async def prepare_batch(tenant: str, collection: str, documents: Any) -> Any:
        await asyncio.sleep(1.0)  # twice the lease
        prepared.extend(document.id for document in documents)
        return documents

    async def write_batch(documents: Any) -> int:
        written.extend(document.id for document in documents)
        return sum(document.chunks for document in documents)

    async def settle(tenant: str, collection: str) -> None:
        return None

    async with jobs.submission() as submission:
        submission.target("tenant-l", "c")
        await submission.add(docs(6))  # 3 chunks each, 2 per batch: 3 steps
    runners = [
        JobRunner(jobs, prepare_batch, write_batch, settle, lease=0.5, poll=0.05) for _ in range(2)
    ]
    for runner in runners:
        runner.start()
    try:
        deadline = time.monotonic() + 30
        while (job := await jobs.get("tenant-l", submission.id)).state not in (SUCCEEDED, FAILED):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        for runner in runners:
            await runner.stop()
        await jobs.close()
    assert job.state == SUCCEEDED, job.errors
    assert (job.documents_done, job.documents_total) == (6, 6)
    assert (job.chunks_embedded, job.chunks_total) == (18, 18)
    assert sorted(prepared) == sorted(written) == sorted(f"d{i}" for i in range(6))


async def test_a_runner_that_lost_its_lease_stops_and_records_nothing(tmp_path: Path) -> None:
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", batch_chunks=6)
    started = asyncio.Event()
    release = asyncio.Event()
    written: list[str] = []

    async def prepare_batch(tenant: str, collection: str, documents: Any) -> Any:
        started.set()
        await release.wait()
        return documents

    async def write_batch(documents: Any) -> int:
        written.extend(document.id for document in documents)
        return 0

    async def settle(tenant: str, collection: str) -> None:
        return None

    async with jobs.submission() as submission:
        submission.target("tenant-f", "c")
        await submission.add(docs(2))
    lost = _sample("aimesh_retrieval_job_failures_total", reason="lease_lost")
    runner = JobRunner(jobs, prepare_batch, write_batch, settle, lease=0.6, poll=0.05)
    runner.start()
    try:
        await asyncio.wait_for(started.wait(), 10)
        # Another runner takes the job over (as if this one had stalled past its lease).
        async with jobs._sessions() as session, session.begin():
            await session.execute(
                text("UPDATE retrieval_ingest_jobs SET owner = 'other' WHERE id = :id"),
                {"id": submission.id},
            )
        deadline = time.monotonic() + 10
        while _sample("aimesh_retrieval_job_failures_total", reason="lease_lost") == lost:
            assert time.monotonic() < deadline, "the runner did not notice"
            await asyncio.sleep(0.05)
        release.set()
        await asyncio.sleep(0.3)
        job = await jobs.get("tenant-f", submission.id)
        # The fenced runner wrote nothing and recorded nothing; the job is still the other's.
        assert written == []
        assert (job.state, job.documents_done) == (RUNNING, 0)
    finally:
        await runner.stop()
        await jobs.close()
