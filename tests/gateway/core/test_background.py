"""Work off the request path: kept running until it ends, awaited by drain."""

from __future__ import annotations

import asyncio

from aimesh_gateway.core.background import Background


async def test_drain_waits_for_every_task_and_survives_their_errors() -> None:
    background = Background()
    done: list[int] = []

    async def work(n: int) -> None:
        await asyncio.sleep(0.01 * n)
        if n == 2:
            raise RuntimeError("a failed write")
        done.append(n)

    for n in range(4):
        background.spawn(work(n))
    assert done == []  # started, not waited for
    await background.drain()
    assert sorted(done) == [0, 1, 3]
    await background.drain()  # nothing left: returns at once
