"""The embedding model's Info (name, dimension, limits), cached and refreshed in the
background with a short deadline, so no route waits on the embedding service to learn it.

``GET /v1/models`` lists the embedding model from this cache: while nothing was ever fetched,
a listing waits for a refresh only until :data:`FIRST_LISTING_WAIT_SECONDS` after that
refresh started, so a hung embedding service (SIGSTOP, a full queue) holds up only the
listings of that first half second, and those by at most that long. ``POST /v1/embeddings``
needs the service anyway; it uses a stale Info rather than waiting for a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

from aimesh.embedding.v1 import embedding_pb2

if TYPE_CHECKING:
    from aimesh.embedding.v1.embedding_pb2_grpc import EmbeddingServiceAsyncStub

log = logging.getLogger("aimesh.gateway.embedding_info")

INFO_TTL_SECONDS = 60.0
"""Age after which a request starts a background refresh (it still uses the old Info)."""
REFRESH_DEADLINE_SECONDS = 2.0
"""Deadline of one background Info call (Info is a constant answer: it is fast or hung)."""
RETRY_SECONDS = 5.0
"""After a failed refresh, the pause before the next one (not one failing call per request)."""
FIRST_LISTING_WAIT_SECONDS = 0.5
"""How long after a refresh starts listings wait for it while no Info was ever fetched."""


class EmbeddingInfoCache:
    """The last Info the embedding service gave, and at most one refresh running."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.fetched: tuple[float, embedding_pb2.InfoResponse] | None = None
        self.failed_at: float | None = None
        self._refresh: asyncio.Task[embedding_pb2.InfoResponse | None] | None = None
        self._refresh_started = 0.0

    def current(self) -> embedding_pb2.InfoResponse | None:
        """The last Info fetched, however old; None before the first success."""
        return self.fetched[1] if self.fetched is not None else None

    def _fresh(self) -> bool:
        return self.fetched is not None and self._clock() - self.fetched[0] < INFO_TTL_SECONDS

    def backing_off(self) -> bool:
        """Whether the last refresh failed less than :data:`RETRY_SECONDS` ago."""
        return self.failed_at is not None and self._clock() - self.failed_at < RETRY_SECONDS

    def refresh(
        self, stub: EmbeddingServiceAsyncStub
    ) -> asyncio.Task[embedding_pb2.InfoResponse | None] | None:
        """Start a background refresh when the Info is missing or old (unless one runs, or
        the service failed a moment ago); the running refresh, or None when none runs."""
        if self._refresh is not None and not self._refresh.done():
            return self._refresh
        if self._fresh() or self.backing_off():
            return None
        self._refresh = asyncio.create_task(self._fetch(stub))
        self._refresh_started = self._clock()
        return self._refresh

    async def _fetch(self, stub: EmbeddingServiceAsyncStub) -> embedding_pb2.InfoResponse | None:
        try:
            info = await stub.Info(embedding_pb2.InfoRequest(), timeout=REFRESH_DEADLINE_SECONDS)
        except grpc.aio.AioRpcError as error:
            log.warning(
                "embedding model info not refreshed", extra={"grpc_code": error.code().name}
            )
            self.failed_at = self._clock()
            return None
        self.fetched = (self._clock(), info)
        self.failed_at = None
        return info

    async def first(
        self, task: asyncio.Task[embedding_pb2.InfoResponse | None]
    ) -> embedding_pb2.InfoResponse | None:
        """``task``'s Info if it ends before :data:`FIRST_LISTING_WAIT_SECONDS` have passed
        since it started (it keeps running otherwise); None at once after that."""
        budget = self._refresh_started + FIRST_LISTING_WAIT_SECONDS - self._clock()
        if budget <= 0:
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(task), budget)
        return None

    async def aclose(self) -> None:
        """Stop a running refresh (at shutdown)."""
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
