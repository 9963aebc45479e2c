"""Background ingestion jobs, kept in SQL (SQLite by default, PostgreSQL when configured).

A job is recorded with all its documents in ONE transaction, so a failed or invalid
submission leaves nothing behind. A runner in each service process claims jobs with a
lease (``owner`` + ``lease_until``), stores their documents in bounded batches through the
same idempotent upsert path as ``UpsertDocuments``, and marks each batch done in the same
transaction that advances the progress counters. After a crash the lease runs out, a
runner (of the restarted process or another replica) claims the job again and continues
with the first batch not marked done; re-storing a batch whose rows were written but not
yet marked is harmless because upserts skip unchanged content and replace chunk rows by
their deterministic ids (no duplicates).

While it works, a runner renews its lease every third of it (a heartbeat), so a step that
takes longer than the lease is not taken over. A runner that could not renew in time has
lost the job: everything it would still record (progress, the end state, an attempt) is
refused (:class:`LeaseLost`, fencing), and its heartbeat stops its run. Progress counts
each document once, whoever stores it: the counters never pass their totals.

A job keeps the W3C ``traceparent`` of the request that submitted it (when that request was
traced), and the runner continues that trace: the job's embedding calls, made later and
maybe by another replica, belong to the trace of the upload that asked for them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.propagate import extract, inject
from sqlalchemy import (
    Boolean,
    DateTime,
    Integer,
    String,
    Text,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aimesh_common import db
from aimesh_common.errors import AimeshError, NotFound, Unavailable
from aimesh_retrieval import metrics
from aimesh_retrieval.migrations import MIGRATIONS

log = logging.getLogger("aimesh.retrieval.jobs")

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"


class LeaseLost(Exception):
    """The runner no longer holds the job: its lease ran out and another runner took the
    job over. Whatever the old runner would still record is refused (fencing)."""


# Chunks stored per step (a document bigger than this is a step of its own): one embedding
# request's worth of work per Milvus write and per progress update, while memory stays
# bounded (a few batches of text and vectors at a time, whatever the job's size).
BATCH_CHUNKS = 512
MAX_ATTEMPTS = 5


class Base(DeclarativeBase):
    """The job tables; aimesh_retrieval/migrations creates and changes them."""


class JobRow(Base):
    __tablename__ = "retrieval_ingest_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128), index=True)
    collection: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    documents_total: Mapped[int] = mapped_column(Integer)
    documents_done: Mapped[int] = mapped_column(Integer, default=0)
    chunks_total: Mapped[int] = mapped_column(Integer)
    chunks_embedded: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[str] = mapped_column(Text, default="[]")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The submitting request's trace context (W3C traceparent), continued by the runner.
    traceparent: Mapped[str | None] = mapped_column(String(64), nullable=True)


class JobDocumentRow(Base):
    __tablename__ = "retrieval_ingest_job_documents"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[str] = mapped_column(String(256))
    text: Mapped[str] = mapped_column(Text)
    metadata_json: Mapped[str] = mapped_column(Text)
    chunks: Mapped[int] = mapped_column(Integer)
    done: Mapped[bool] = mapped_column(Boolean, default=False)


@dataclass(frozen=True)
class JobDocument:
    """A document of a job, as submitted (validated) with its chunk count."""

    id: str
    text: str
    metadata: dict[str, Any]
    chunks: int


@dataclass(frozen=True)
class Job:
    id: str
    tenant_id: str
    collection: str
    state: str
    documents_total: int
    documents_done: int
    chunks_total: int
    chunks_embedded: int
    errors: list[str]
    created_at: datetime
    updated_at: datetime
    traceparent: str | None = None


def _job(row: JobRow) -> Job:
    return Job(
        id=row.id,
        tenant_id=row.tenant_id,
        collection=row.collection,
        state=row.state,
        documents_total=row.documents_total,
        documents_done=row.documents_done,
        chunks_total=row.chunks_total,
        chunks_embedded=row.chunks_embedded,
        errors=list(json.loads(row.errors)),
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        traceparent=row.traceparent,
    )


def _utc(value: datetime) -> datetime:
    # SQLite returns naive datetimes; they were stored as UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _current_traceparent() -> str | None:
    """The current span's ``traceparent``, or None outside a trace."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def _continuing(traceparent: str | None) -> Iterator[None]:
    """Run in the trace of ``traceparent`` (the job's submitter), when there is one."""
    if traceparent is None:
        yield
        return
    token = otel_context.attach(extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        otel_context.detach(token)


class JobStore:
    """Job rows in SQL; every method is one short transaction."""

    def __init__(self, engine: AsyncEngine, *, batch_chunks: int = BATCH_CHUNKS) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._batch_chunks = batch_chunks

    @classmethod
    async def open(
        cls, url: str, *, batch_chunks: int = BATCH_CHUNKS, migrate: bool = True
    ) -> JobStore:
        """The store at ``url``, its schema first brought to the newest revision unless
        ``migrate`` is False (then ``make migrate`` does it)."""
        engine = db.create_engine(url)
        try:
            if migrate:
                await db.migrate(engine, MIGRATIONS)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, batch_chunks=batch_chunks)

    async def close(self) -> None:
        await self._engine.dispose()

    @contextlib.asynccontextmanager
    async def submission(self) -> AsyncIterator[_Submission]:
        """A transaction in which ``add`` records documents; committed on a clean exit only,
        so an invalid submission leaves no job and no document behind."""
        async with self._sessions() as session, session.begin():
            job = _Submission(session)
            yield job
            await job.finish()

    async def get(self, tenant_id: str, job_id: str) -> Job:
        async with self._sessions() as session:
            row = await session.get(JobRow, job_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFound(f"job '{job_id[:64]}' not found")
        return _job(row)

    async def count_by_state(self) -> dict[str, int]:
        """Jobs per state in the table (one indexed GROUP BY)."""
        async with self._sessions() as session:
            rows = await session.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
            return {state: count for state, count in rows.all()}  # noqa: C416 - Row pairs

    async def claim(self, owner: str, lease: float) -> Job | None:
        """Take the oldest queued job, or a running one whose lease ran out."""
        now = _now()
        async with self._sessions() as session, session.begin():
            candidates = await session.scalars(
                select(JobRow)
                .where(
                    or_(
                        JobRow.state == QUEUED,
                        and_(JobRow.state == RUNNING, JobRow.lease_until < now),
                    )
                )
                .order_by(JobRow.created_at)
                .limit(5)
            )
            for row in candidates:
                claimed = await session.execute(
                    update(JobRow)
                    .where(JobRow.id == row.id, JobRow.updated_at == row.updated_at)
                    .values(
                        state=RUNNING,
                        owner=owner,
                        lease_until=now + timedelta(seconds=lease),
                        updated_at=now,
                    )
                )
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    refreshed = await session.get(JobRow, row.id)
                    assert refreshed is not None
                    return _job(refreshed)
        return None

    async def next_batch(self, job_id: str, after: int = -1) -> list[tuple[int, JobDocument]]:
        """The next documents not yet done (and after sequence number ``after``) holding at
        most ``batch_chunks`` chunks together (or one bigger document).

        Only the chosen documents' texts are read: the choice is made from their chunk
        counts, so a run of big documents never loads more than the batch.
        """
        pending = (
            JobDocumentRow.job_id == job_id,
            JobDocumentRow.done.is_(False),
            JobDocumentRow.seq > after,
        )
        async with self._sessions() as session:
            heads = await session.execute(
                select(JobDocumentRow.seq, JobDocumentRow.chunks)
                .where(*pending)
                .order_by(JobDocumentRow.seq)
                .limit(self._batch_chunks)
            )
            chosen: list[int] = []
            chunks = 0
            for seq, count in heads:
                if chosen and chunks + count > self._batch_chunks:
                    break
                chosen.append(seq)
                chunks += count
            if not chosen:
                return []
            rows = await session.scalars(
                select(JobDocumentRow)
                .where(*pending, JobDocumentRow.seq.in_(chosen))
                .order_by(JobDocumentRow.seq)
            )
            return [
                (
                    row.seq,
                    JobDocument(
                        row.document_id, row.text, json.loads(row.metadata_json), row.chunks
                    ),
                )
                for row in rows
            ]

    @staticmethod
    async def _owned(session: AsyncSession, job_id: str, owner: str) -> JobRow:
        """The job's row, locked; LeaseLost unless ``owner`` still runs it."""
        row = await session.get(JobRow, job_id, with_for_update=True)
        if row is None or row.state != RUNNING or row.owner != owner:
            raise LeaseLost(job_id)
        return row

    async def renew(self, job_id: str, owner: str, lease: float) -> None:
        """Extend ``owner``'s lease (the runner's heartbeat); LeaseLost if it was taken over."""
        now = _now()
        async with self._sessions() as session, session.begin():
            renewed = await session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.owner == owner, JobRow.state == RUNNING)
                .values(lease_until=now + timedelta(seconds=lease))
            )
            if renewed.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(job_id)

    async def mark_done(self, job_id: str, owner: str, seqs: Sequence[int], lease: float) -> int:
        """Record the documents ``seqs`` as stored, once each: counters advance only by the
        documents not yet done, so they never pass their totals. LeaseLost (nothing recorded)
        when ``owner`` no longer holds the job. Returns the chunks newly counted."""
        now = _now()
        async with self._sessions() as session, session.begin():
            row = await self._owned(session, job_id, owner)
            pending = (
                await session.execute(
                    select(JobDocumentRow.seq, JobDocumentRow.chunks).where(
                        JobDocumentRow.job_id == job_id,
                        JobDocumentRow.seq.in_(list(seqs)),
                        JobDocumentRow.done.is_(False),
                    )
                )
            ).all()
            chunks = sum(count for _, count in pending)
            if pending:
                await session.execute(
                    update(JobDocumentRow)
                    .where(
                        JobDocumentRow.job_id == job_id,
                        JobDocumentRow.seq.in_([seq for seq, _ in pending]),
                    )
                    .values(done=True)
                )
            row.documents_done += len(pending)
            row.chunks_embedded += chunks
            row.lease_until = now + timedelta(seconds=lease)
            row.updated_at = now
            return chunks

    async def finish(
        self, job_id: str, state: str, error: str | None = None, *, owner: str | None = None
    ) -> None:
        """End the job; with ``owner``, only while that runner holds it (else LeaseLost)."""
        async with self._sessions() as session, session.begin():
            if owner is not None:
                row = await self._owned(session, job_id, owner)
            else:
                found = await session.get(JobRow, job_id, with_for_update=True)
                assert found is not None
                row = found
            row.state = state
            if error:
                row.errors = json.dumps([*json.loads(row.errors), error])
            row.owner = None
            row.lease_until = None
            row.updated_at = _now()

    async def failed_attempt(self, job_id: str, error: str, *, owner: str) -> int:
        """Count a failed attempt of ``owner``'s run; returns the attempts so far."""
        async with self._sessions() as session, session.begin():
            row = await self._owned(session, job_id, owner)
            row.attempts += 1
            row.errors = json.dumps([*json.loads(row.errors), error][-20:])
            row.updated_at = _now()
            return row.attempts


class _Submission:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.id = uuid.uuid4().hex
        self._tenant = ""
        self._collection = ""
        self.job: Job | None = None
        self._documents = 0
        self._chunks = 0
        self._ids: set[str] = set()

    async def add(self, documents: Sequence[JobDocument]) -> None:
        for document in documents:
            self._session.add(
                JobDocumentRow(
                    job_id=self.id,
                    seq=self._documents,
                    document_id=document.id,
                    text=document.text,
                    metadata_json=json.dumps(document.metadata, ensure_ascii=False),
                    chunks=document.chunks,
                    done=False,
                )
            )
            self._documents += 1
            self._chunks += document.chunks
        await self._session.flush()
        # The rows are written (in this transaction); the session need not keep their texts:
        # a big upload's memory then stays at one message, not the whole job.
        self._session.expunge_all()

    def target(self, tenant_id: str, collection: str) -> None:
        self._tenant = tenant_id
        self._collection = collection

    def seen(self, document_id: str) -> bool:
        if document_id in self._ids:
            return True
        self._ids.add(document_id)
        return False

    @property
    def documents(self) -> int:
        return self._documents

    async def finish(self) -> None:
        now = _now()
        traceparent = _current_traceparent()
        self._session.add(
            JobRow(
                id=self.id,
                tenant_id=self._tenant,
                collection=self._collection,
                state=QUEUED,
                documents_total=self._documents,
                documents_done=0,
                chunks_total=self._chunks,
                chunks_embedded=0,
                errors="[]",
                attempts=0,
                created_at=now,
                updated_at=now,
                traceparent=traceparent,
            )
        )
        self.job = Job(
            self.id,
            self._tenant,
            self._collection,
            QUEUED,
            self._documents,
            0,
            self._chunks,
            0,
            [],
            now,
            now,
            traceparent,
        )


PrepareBatch = Callable[[str, str, Sequence[JobDocument]], Awaitable[Any]]
"""Splits and embeds documents of (tenant, collection) without writing; returns a plan."""

WriteBatch = Callable[[Any], Awaitable[int]]
"""Writes a plan made by a PrepareBatch; returns the chunks the documents have."""

Settle = Callable[[str, str], Awaitable[None]]
"""Waits until the writes to (tenant, collection) are searchable from every replica."""

# Batches prepared ahead of the one being written: the embedding service works on the next
# batch while this process writes the previous one to Milvus and records its progress.
PREPARED_AHEAD = 1
# Batches being prepared at once: while one is embedded, the next is read, split and
# checked against the store, so the embedding service does not wait between batches.
PREPARING = 2


class JobRunner:
    """Claims and runs jobs in the background of one service process."""

    def __init__(
        self,
        jobs: JobStore,
        prepare_batch: PrepareBatch,
        write_batch: WriteBatch,
        settle: Settle,
        *,
        lease: float = 30.0,
        poll: float = 2.0,
    ) -> None:
        self._jobs = jobs
        self._prepare_batch = prepare_batch
        self._write_batch = write_batch
        self._settle = settle
        self._lease = lease
        self._poll = poll
        self._owner = uuid.uuid4().hex
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="ingest-jobs")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _report(self) -> None:
        counts = await self._jobs.count_by_state()
        for state in (QUEUED, RUNNING, SUCCEEDED, FAILED):
            metrics.JOBS.labels(state).set(counts.get(state, 0))

    async def _loop(self) -> None:
        while True:
            try:
                await self._report()
            except Exception:
                log.exception("cannot count ingestion jobs for the metrics")
            try:
                job = await self._jobs.claim(self._owner, self._lease)
            except Exception:
                log.exception("cannot claim ingestion jobs")
                job = None
            if job is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                continue
            await self._run(job)

    async def _run(self, job: Job) -> None:
        with _continuing(job.traceparent):
            run = asyncio.current_task()
            assert run is not None
            heartbeat = asyncio.create_task(self._heartbeat(job, run), name=f"lease-{job.id}")
            try:
                await self._run_steps(job)
            except LeaseLost:
                metrics.JOB_FAILURES.labels("lease_lost").inc()
                log.warning("ingestion job taken over by another runner", extra={"job": job.id})
            except asyncio.CancelledError:
                if heartbeat.done() and not heartbeat.cancelled() and heartbeat.result():
                    # The heartbeat found the lease lost and stopped this run.
                    run.uncancel()
                    metrics.JOB_FAILURES.labels("lease_lost").inc()
                    log.warning("ingestion job lease lost; run stopped", extra={"job": job.id})
                else:
                    raise
            finally:
                heartbeat.cancel()

    async def _heartbeat(self, job: Job, run: asyncio.Task[Any]) -> bool:
        """Renew the lease every third of it while the job runs. When it cannot (another
        runner took the job over), stop the run and return True."""
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                await self._jobs.renew(job.id, self._owner, self._lease)
            except LeaseLost:
                run.cancel()
                return True
            except Exception:  # noqa: BLE001 - logged; the next beat tries again
                # A database hiccup: the lease still has 2/3 left when the next beat runs.
                log.warning("cannot renew the lease of an ingestion job", extra={"job": job.id})

    async def _run_steps(self, job: Job) -> None:
        log.info("running ingestion job", extra={"job": job.id, "collection": job.collection})
        started = time.perf_counter()
        outcome = await self._attempt(job)
        metrics.JOB_SECONDS.labels(outcome).observe(time.perf_counter() - started)
        if outcome != "retry":
            metrics.JOBS_FINISHED.labels(outcome).inc()

    async def _attempt(self, job: Job) -> str:
        """Run the job once: "succeeded", "failed", or "retry" (left for a later attempt)."""
        try:
            await self._store_documents(job)
            # "Succeeded" promises that a search on any replica finds every document.
            await self._settle(job.tenant_id, job.collection)
        except Unavailable as error:
            metrics.JOB_FAILURES.labels("unavailable").inc()
            attempts = await self._jobs.failed_attempt(job.id, error.message, owner=self._owner)
            if attempts >= MAX_ATTEMPTS:
                await self._jobs.finish(job.id, FAILED, owner=self._owner)
                return FAILED
            # Leave it RUNNING with its lease: it is retried once the lease ran out.
            log.warning("ingestion job will be retried", extra={"job": job.id})
            await asyncio.sleep(min(self._lease, 2.0 * attempts))
            return "retry"
        except LeaseLost:
            raise
        except AimeshError as error:
            metrics.JOB_FAILURES.labels("invalid").inc()
            await self._jobs.finish(job.id, FAILED, error.message, owner=self._owner)
            return FAILED
        except Exception as error:
            metrics.JOB_FAILURES.labels("internal").inc()
            log.exception("ingestion job failed", extra={"job": job.id})
            await self._jobs.finish(
                job.id, FAILED, f"internal error: {type(error).__name__}", owner=self._owner
            )
            return FAILED
        await self._jobs.finish(job.id, SUCCEEDED, owner=self._owner)
        log.info("ingestion job done", extra={"job": job.id})
        return SUCCEEDED

    async def _store_documents(self, job: Job) -> None:
        """Prepare (split, embed) batches in one task and write them, in order, in this one.

        A batch is marked done only after it was written, in submission order, so a
        restarted job continues exactly after the last batch written. Memory stays bounded:
        at most PREPARING + PREPARED_AHEAD + 1 batches exist at once.
        """
        # (sequence numbers, plan) per batch; an exception of the preparing task; None: done.
        prepared: asyncio.Queue[tuple[list[int], Any] | Exception | None] = asyncio.Queue(
            maxsize=PREPARED_AHEAD
        )

        async def prepare() -> None:
            # (sequence numbers, task preparing them), oldest first.
            running: collections.deque[tuple[list[int], asyncio.Future[Any]]] = collections.deque()
            try:
                after, exhausted = -1, False
                while True:
                    while not exhausted and len(running) < PREPARING:
                        batch = await self._jobs.next_batch(job.id, after)
                        if not batch:
                            exhausted = True
                            break
                        after = batch[-1][0]
                        documents = [document for _, document in batch]
                        future = asyncio.ensure_future(
                            self._prepare_batch(job.tenant_id, job.collection, documents)
                        )
                        running.append(([seq for seq, _ in batch], future))
                    if not running:
                        break
                    seqs, oldest = running[0]
                    plan = await oldest
                    running.popleft()
                    await prepared.put((seqs, plan))
                await prepared.put(None)
            except Exception as error:  # noqa: BLE001 - handed to the writer, which re-raises it
                await prepared.put(error)
            finally:
                leftovers = [pending for _, pending in running]
                for pending in leftovers:
                    pending.cancel()
                await asyncio.gather(*leftovers, return_exceptions=True)

        producer = asyncio.create_task(prepare(), name=f"ingest-prepare-{job.id}")
        try:
            while (item := await prepared.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                seqs, plan = item
                await self._write_batch(plan)
                chunks = await self._jobs.mark_done(job.id, self._owner, seqs, self._lease)
                metrics.JOB_CHUNKS_EMBEDDED.inc(chunks)
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
