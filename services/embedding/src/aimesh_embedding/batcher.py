"""Dynamic batching: the inputs of concurrent calls share model batches.

One batcher serves one model: the embedding model (inputs are token ids, rows are vectors)
and, when configured, the rerank cross-encoder (inputs are query/text pairs, rows are one
score each). Both use the same packing below.

Each call is tokenized when it arrives and its inputs join one pool. Whenever the model is
free, the batcher picks the next batch from the pool:

* it is built around the **oldest** waiting input (so no input waits behind an endless stream
  of better-fitting ones),
* it grows with the neighbours of that input in **length order**, taking at each step the
  neighbour that keeps the batch's fill ratio (real tokens / padded tokens) highest, and stops
  when the fill would drop below ``MIN_FILL``, the batch would exceed ``max_batch_tokens``
  padded tokens, or it holds ``max_batch_inputs`` inputs.

Padding every input to the longest one of its batch costs more than batching saves on a CPU,
so grouping inputs of similar length is what makes batching pay (see docs/benchmarks.md).
The model runs on one dedicated thread, off the event loop; results go back to each caller in
its own order as soon as all of its inputs are done. The pool is bounded: a call that would
push it over ``max_queue_inputs`` is refused at once with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from aimesh_common.errors import ResourceExhausted, Unavailable
from aimesh_common.memory import IdleTrim
from aimesh_embedding import metrics
from aimesh_embedding.model import Vectors

log = logging.getLogger("aimesh.embedding.batcher")

# Below this fill ratio a neighbour is left for a later batch: running it separately costs
# less than padding the whole batch to its length (or it to the batch's).
MIN_FILL = 0.5

# What one input of a call is: anything whose len() is its model tokens (an array of token
# ids for the embedding model, a tokenized pair for the cross-encoder).
InputT = TypeVar("InputT", bound=Sized)


@dataclass(eq=False)
class _Call:
    vectors: Vectors
    remaining: int
    enqueued: float
    future: asyncio.Future[Vectors]
    started: bool = False


@dataclass(eq=False)
class _Item(Generic[InputT]):
    call: _Call
    index: int
    ids: InputT
    seq: int
    length: int = field(init=False)

    def __post_init__(self) -> None:
        self.length = len(self.ids)


class Batcher(Generic[InputT]):
    """Packs the inputs of concurrent calls into shared, length-bucketed model batches.

    ``run_batch`` is the model: it maps a batch of inputs to one row of ``width`` floats
    per input. ``stage_metrics`` names the metrics it reports to (embedding or rerank).
    """

    def __init__(
        self,
        run_batch: Callable[[list[InputT]], Vectors],
        width: int,
        *,
        max_batch_tokens: int,
        max_batch_inputs: int,
        max_wait_seconds: float,
        max_queue_inputs: int,
        stage_metrics: metrics.BatchMetrics = metrics.EMBED_BATCHES,
        what: str = "embedding",
        on_idle: IdleTrim | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._width = width
        self._metrics = stage_metrics
        self._what = what
        self._max_tokens = max_batch_tokens
        self._max_inputs = max_batch_inputs
        self._max_wait = max_wait_seconds
        self._max_queue = max_queue_inputs
        self._on_idle = on_idle
        self._ran = False  # a batch ran since the last trim
        self._pool: list[_Item[InputT]] = []
        self._queued = 0
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{what}-model")

    async def submit(self, ids: Sequence[InputT]) -> Vectors:
        """The model's rows for ``ids`` (vectors or scores), in order.

        Raises ResourceExhausted when the pool cannot take ``len(ids)`` more inputs, and
        Unavailable once the batcher is closing.
        """
        if self._closing:
            raise Unavailable(f"the {self._what} model is shutting down; retry on another replica")
        count = len(ids)
        if self._queued + count > self._max_queue:
            self._metrics.rejections.labels(reason="queue_full").inc()
            raise ResourceExhausted(
                f"the {self._what} queue is full ({self._queued} of {self._max_queue} inputs "
                f"waiting, this call brings {count}); retry with backoff"
            )
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")
        call = _Call(
            vectors=np.zeros((count, self._width), dtype=np.float32),
            remaining=count,
            enqueued=time.perf_counter(),
            future=asyncio.get_running_loop().create_future(),
        )
        self._pool.extend(_Item(call, i, row, next(self._seq)) for i, row in enumerate(ids))
        self._add_queued(count)
        self._wakeup.set()
        return await call.future

    async def close(self) -> None:
        """Finish what is in the pool, then stop the model thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _add_queued(self, delta: int) -> None:
        self._queued += delta
        self._metrics.queue_inputs.set(self._queued)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pool:
                if self._closing:
                    return
                # Batches ran since the last trim: trim once it is due, if still idle then.
                trim = self._on_idle if self._ran else None
                trim_in = trim.remaining() if trim is not None else None
                if trim is not None and trim_in is not None and trim_in <= 0:
                    # On the model's thread, so it never runs beside a batch.
                    took = await loop.run_in_executor(self._executor, trim)
                    metrics.MALLOC_TRIM_SECONDS.observe(took)
                    self._ran = False
                    continue  # calls that came meanwhile are served first
                self._wakeup.clear()
                if trim_in is None:
                    await self._wakeup.wait()
                else:
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), trim_in)
                    except TimeoutError:
                        continue
                # The model was idle: give a burst of calls a moment to join one batch.
                if 0 < len(self._pool) < self._max_inputs and self._max_wait > 0:
                    await asyncio.sleep(self._max_wait)
            batch = self._select()
            if not batch:
                continue
            started = time.perf_counter()
            for item in batch:
                if not item.call.started:
                    item.call.started = True
                    self._metrics.queue_seconds.observe(started - item.call.enqueued)
            try:
                vectors = await loop.run_in_executor(
                    self._executor, self._run_batch, [item.ids for item in batch]
                )
            except Exception as error:
                log.exception("model batch failed", extra={"inputs": len(batch)})
                self._fail(batch, error)
                continue
            elapsed = time.perf_counter() - started
            padded = len(batch) * max(item.length for item in batch)
            self._metrics.inference_seconds.observe(elapsed)
            self._metrics.batch_inputs.observe(len(batch))
            self._metrics.batch_fill.observe(sum(item.length for item in batch) / padded)
            self._deliver(batch, vectors)
            self._ran = True

    def _select(self) -> list[_Item[InputT]]:
        """Take the next batch out of the pool (see the module docstring)."""
        live = [item for item in self._pool if not item.call.future.done()]
        dropped = len(self._pool) - len(live)
        if dropped:
            # Calls cancelled by their callers (deadline, disconnect) leave the pool.
            self._add_queued(-dropped)
        if not live:
            self._pool = []
            return []
        live.sort(key=lambda item: (item.length, item.seq))
        anchor = min(range(len(live)), key=lambda i: live[i].seq)
        low = high = anchor
        total = longest = live[anchor].length
        while high - low + 1 < self._max_inputs:
            size = high - low + 2
            best: tuple[float, int] | None = None
            if low > 0:
                fill = (total + live[low - 1].length) / (size * longest)
                if size * longest <= self._max_tokens:
                    best = (fill, -1)
            if high + 1 < len(live):
                candidate = live[high + 1].length
                fill = (total + candidate) / (size * candidate)
                if size * candidate <= self._max_tokens and (best is None or fill > best[0]):
                    best = (fill, +1)
            if best is None or best[0] < MIN_FILL:
                break
            if best[1] < 0:
                low -= 1
                total += live[low].length
            else:
                high += 1
                total += live[high].length
                longest = live[high].length
        batch = live[low : high + 1]
        self._pool = live[:low] + live[high + 1 :]
        return batch

    def _deliver(self, batch: list[_Item[InputT]], vectors: Vectors) -> None:
        for item, row in zip(batch, vectors, strict=True):
            call = item.call
            if call.future.done():
                continue
            call.vectors[item.index] = row
            call.remaining -= 1
            if call.remaining == 0:
                call.future.set_result(call.vectors)
        self._add_queued(-len(batch))

    def _fail(self, batch: list[_Item[InputT]], error: Exception) -> None:
        for item in batch:
            if not item.call.future.done():
                item.call.future.set_exception(error)
        self._add_queued(-len(batch))
