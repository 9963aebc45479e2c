"""Work done off the request path (usage records, conversation metadata, announcements):
started at once, kept referenced until it ends, and awaited at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Background:
    """A set of running tasks: :meth:`spawn` one, :meth:`drain` waits for all of them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the tasks still running, and those they spawn (their errors are theirs to
        log)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
