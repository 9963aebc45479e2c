"""Cache invalidations shared by every gateway process over Redis pub/sub.

Each process caches verified API keys and tenant limit overrides for a few seconds (so a
request asks neither the database nor Redis). When an admin revokes a key or changes a
limit, the process that served the call drops its entry at once and announces it on one
Redis channel; every other worker and replica drops its entry when the message arrives
(milliseconds), instead of when its cache entry expires.

Messages missed while a process was not subscribed (Redis down, reconnecting) cannot be
replayed, so each (re)subscription clears those caches whole. Without Redis there is no
other process to tell (the embedded default runs one worker) and announcing is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from aimesh_gateway.core.background import Background

log = logging.getLogger("aimesh.gateway.invalidation")

RETRY_SECONDS = 1.0
POLL_SECONDS = 5.0


class Invalidations:
    """Announces invalidations and applies the other processes' ones to local caches."""

    def __init__(self, redis: Redis | None, prefix: str) -> None:
        self.redis = redis
        self.channel = f"{prefix}invalidate"
        self._handlers: dict[str, Callable[[str], None]] = {}
        self._resets: list[Callable[[], None]] = []
        self._announcing = Background()
        self._listener: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def on(self, kind: str, handler: Callable[[str], None], reset: Callable[[], None]) -> None:
        """Call ``handler(value)`` for each announced ``kind``; ``reset()`` on resubscribing."""
        self._handlers[kind] = handler
        self._resets.append(reset)

    def announce(self, kind: str, value: str) -> None:
        """Tell the other processes (in the background: the caller has applied it locally)."""
        if self.redis is None:
            return
        self._announcing.spawn(self._publish(f"{kind}:{value}"))

    async def _publish(self, message: str) -> None:
        assert self.redis is not None
        try:
            await self.redis.publish(self.channel, message)
        except RedisError as error:
            # The others' entries then expire by themselves (cache seconds).
            log.warning("could not announce an invalidation: %s", type(error).__name__)

    def start(self, url: str) -> None:
        """Listen on a connection of its own (no socket timeout: it waits for messages)."""
        if self.redis is None or self._listener is not None:
            return
        self._listener = asyncio.create_task(self._listen(url))

    async def _listen(self, url: str) -> None:
        failing = False
        while True:
            client = Redis.from_url(url, socket_connect_timeout=0.5, health_check_interval=15)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    for reset in self._resets:
                        reset()  # whatever was announced while not subscribed is dropped
                    if failing:
                        log.info("invalidations resubscribed")
                    failing = False
                    self.subscribed.set()
                    while True:
                        message = await pubsub.get_message(timeout=POLL_SECONDS)
                        if message is not None:
                            self._apply(message.get("data"))
            except (RedisError, OSError) as error:
                self.subscribed.clear()
                if not failing:
                    log.warning(
                        "invalidation channel lost (%s); caches expire by themselves until "
                        "it is back",
                        type(error).__name__,
                    )
                failing = True
            finally:
                await client.aclose()
            await asyncio.sleep(RETRY_SECONDS)

    def _apply(self, data: object) -> None:
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        if not isinstance(data, str):
            return
        kind, _, value = data.partition(":")
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(value)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        await self._announcing.drain()
