"""The gateway benchmark's lean HTTP client (the benchmark itself is ``make bench-gateway``),
against a real uvicorn server on a local port."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request

from scripts.bench.gateway import RawHttp, _measure
from tests.conftest import free_port


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[dict[str, object]]]]:
    app = FastAPI()
    seen: list[dict[str, object]] = []

    @app.post("/echo")
    async def echo(
        request: Request, authorization: str = Header(""), cache_control: str = Header("")
    ) -> dict[str, object]:
        body = await request.json()
        if authorization != "Bearer k":
            raise HTTPException(401, "no key")
        peer = request.client.port if request.client else 0
        seen.append({"body": body, "cache_control": cache_control, "peer": peer})
        return {"count": len(seen), "pad": "x" * 5000}

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    task = asyncio.create_task(server.serve())
    for _ in range(250):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{port}", seen
    server.should_exit = True
    await task


def args(target: str, credential: str, no_cache: str = "") -> argparse.Namespace:
    return argparse.Namespace(
        target=target,
        path="/echo",
        credential=credential,
        body=json.dumps({"q": "hello"}),
        no_cache=no_cache,
    )


async def test_lean_client_keeps_connections_alive_and_reads_whole_bodies(
    server: tuple[str, list[dict[str, object]]],
) -> None:
    url, seen = server
    client = RawHttp.prepare(args(url, "k", no_cache="1"))
    await client.open(4)
    try:
        result = await _measure(client.call, concurrency=4, total=40)
    finally:
        await client.close()
    assert len(result["latencies_ms"]) == 40
    assert len(seen) == 44  # one warm-up round of 4, then 40
    assert all(s["body"] == {"q": "hello"} and s["cache_control"] == "no-cache" for s in seen)
    assert len({s["peer"] for s in seen}) == 4  # four keep-alive connections, no more


async def test_lean_client_stops_on_an_error_status(
    server: tuple[str, list[dict[str, object]]],
) -> None:
    client = RawHttp.prepare(args(server[0], "wrong"))
    await client.open(1)
    try:
        with pytest.raises(SystemExit, match="HTTP 401"):
            await client.call()
    finally:
        await client.close()
