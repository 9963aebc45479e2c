"""Keeps a process's resident memory flat under large blocks of ever-new sizes (issue 28).

The embedding model's activations are a few large blocks per batch (hidden states, attention scores,
feed-forward intermediates: 0.1 to tens of MiB each) whose sizes follow the batch's shape,
(inputs, tokens), which the dynamic batcher varies from one batch to the next. glibc's malloc
starts by serving blocks of 128 KiB or more with mmap, returned to the OS when freed, but it
raises that threshold to the size of every such block freed (up to 32 MiB). From then on the
model's blocks are carved from the heap, and a freed block is resident until a block of a
size that fits reuses it. Shapes seen before reuse their holes; each new shape adds more.
The soak of issue 28 saw +100 MiB in 8 minutes; ``malloc_trim`` gives such growth back, so
it is free memory held by the allocator, not a leak (scripts/embedding_memory.py measures it;
docs/benchmarks.md, "Embedding memory", has the figures).

Milvus Lite, inside the retrieval process, does the same with the arrays of its writes,
flushes and searches, whose sizes follow the collection's: retrieval's memory kept rising
with its stored chunks where the fixed threshold levels it off.

Fixing the threshold with ``mallopt(M_MMAP_THRESHOLD)`` turns the dynamic adjustment off, so
every block above it is mapped for its batch and unmapped after it. This is process-wide and
only glibc has it; elsewhere the setting is reported as not applied. Each service that uses
it has its own setting (``AIMESH_EMBEDDING_MALLOC_MMAP_THRESHOLD_KIB``,
``AIMESH_MALLOC_MMAP_THRESHOLD_KIB`` for retrieval), applied by :func:`apply_malloc_settings`
at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import platform
import time
from collections.abc import Callable

log = logging.getLogger("aimesh.memory")

# <malloc.h>: mallopt's parameter for the mmap threshold.
M_MMAP_THRESHOLD = -3
# The highest threshold glibc's dynamic adjustment reaches on 64-bit systems
# (DEFAULT_MMAP_THRESHOLD_MAX); a fixed one above it would keep even more than the default.
MAX_MMAP_THRESHOLD_KIB = 32 * 1024


def is_glibc() -> bool:
    return platform.libc_ver()[0] == "glibc"


def set_mmap_threshold(kib: int) -> bool:
    """Serve blocks of at least ``kib`` KiB with mmap, for good; True when glibc took it.

    0 leaves malloc's dynamic threshold alone (and returns False).
    """
    if kib <= 0 or not is_glibc():
        return False
    libc = ctypes.CDLL(None)  # the symbols already loaded in this process: its own libc
    return bool(libc.mallopt(M_MMAP_THRESHOLD, kib * 1024))


def apply_malloc_settings(mmap_threshold_kib: int, setting: str) -> None:
    """Apply a service's threshold setting (``setting`` names its variable, for the log) at
    start, before its large allocations begin (a model, Milvus Lite)."""
    if mmap_threshold_kib <= 0:
        log.info("malloc mmap threshold left dynamic (%s=0)", setting)
        return
    if set_mmap_threshold(mmap_threshold_kib):
        log.info("malloc mmap threshold fixed", extra={"mmap_threshold_kib": mmap_threshold_kib})
    else:
        log.warning(
            "malloc mmap threshold not applied (not glibc): resident memory may grow with "
            "the number of distinct sizes of its large blocks",
            extra={"libc": platform.libc_ver()[0] or "unknown"},
        )


def malloc_trim() -> bool:
    """Give the allocator's free memory back to the OS (glibc's ``malloc_trim(0)``: the top
    of every arena, and whole free pages inside them); True when memory was released."""
    if not is_glibc():
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.malloc_trim(0))


class IdleTrim:
    """Calls :func:`malloc_trim` when a worker goes idle, at most once every ``every``
    seconds (0: never). Memory freed by one batch and not reused by the next stays resident
    until glibc reuses it; trimming when idle hands it back, so the resident size follows
    what the process holds, not the most it has held in each of its arenas."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._last = clock()
        self.trims = 0

    def remaining(self) -> float | None:
        """Seconds until a trim is due (0 or less: due now); None when it never trims."""
        if self.every <= 0:
            return None
        return self.every - (self._clock() - self._last)

    def due(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0

    def __call__(self) -> float:
        """Trim if due; the seconds it took (0.0 when not due)."""
        if not self.due():
            return 0.0
        started = time.perf_counter()
        malloc_trim()
        self._last = self._clock()
        self.trims += 1
        return time.perf_counter() - started


class PeriodicTrim:
    """Calls :func:`malloc_trim` on a worker thread every ``every`` seconds, for a process
    with no single thread that goes idle (retrieval: gRPC handlers and Milvus Lite's own
    threads, each allocating from its own glibc arena). ``observe`` gets each trim's
    seconds (a metric). :meth:`start` from a running loop; :meth:`stop` cancels it."""

    def __init__(self, every: float, observe: Callable[[float], object]) -> None:
        self.every = every
        self._observe = observe
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.every > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="malloc-trim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            started = time.perf_counter()
            await asyncio.to_thread(malloc_trim)
            self._observe(time.perf_counter() - started)
