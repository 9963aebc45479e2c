"""The peers benchmark's own parts: its HTTP reading, its open-loop generator and its report."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from scripts.bench.peers import Cell, open_loop, ratios, read_response, render, sustained


async def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_reads_a_sized_and_a_chunked_response() -> None:
    sized = await _reader(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert await read_response(sized) == (200, b"hello")
    chunked = await _reader(
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\n\r\n"
    )
    assert await read_response(chunked) == (201, b"hello")


async def _serve(status: bytes) -> tuple[asyncio.Server, int, list[int]]:
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                seen.append(1)
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


async def test_open_loop_sends_at_its_rate_and_counts_failures() -> None:
    server, port, seen = await _serve(b"200 OK")
    async with server:
        cell = await open_loop("127.0.0.1", port, REQUEST, rate=100, seconds=0.5)
    assert (len(cell.latencies), cell.errors, len(seen)) == (50, 0, 50)
    assert all(0 < latency < 1 for latency in cell.latencies)
    failing, port, _ = await _serve(b"503 Service Unavailable")
    async with failing:
        cell = await open_loop("127.0.0.1", port, REQUEST, rate=100, seconds=0.2)
    assert (len(cell.latencies), cell.errors) == (0, 20)
    assert math.isnan(cell.row()["p50_ms"])


def _row(
    system: str, rate: float, achieved: float, errors: int, p99: float, cpu: float
) -> dict[str, Any]:
    return {
        "system": system,
        "rate": rate,
        "achieved": achieved,
        "p50_ms": 5.0,
        "p99_ms": p99,
        "max_ms": p99,
        "errors": errors,
        "cpu_ms_per_request": cpu,
        "load": 0.5,
    }


def test_the_sustained_rate_is_the_best_clean_cell_and_ratios_compare_it() -> None:
    rows = [
        _row("aimesh", 100, 100, 0, 20, 4.0),
        _row("aimesh", 300, 299, 0, 40, 3.5),
        _row("aimesh", 500, 380, 12, 9000, 3.4),
        _row("litellm", 100, 99, 0, 30, 13.0),
        _row("litellm", 300, 150, 0, 4000, 12.0),
    ]
    assert sustained(rows, "aimesh") == 299
    assert sustained(rows, "litellm") == 99
    single = {
        "aimesh": {"c1_p50_ms": 4.0, "c1_p99_ms": 6.0, "ttft_p50_ms": 3.0},
        "litellm": {"c1_p50_ms": 12.0, "c1_p99_ms": 18.0, "ttft_p50_ms": 12.0},
    }
    [line] = ratios({"cells": rows, "single": single})
    assert "299 / 99 = 3.02x" in line
    assert "c=1 p50 3.00x lower" in line
    assert "CPU per request 3.53x less" in line
    text = render({"cells": rows, "single": single}, None)
    assert "| 500 | aimesh | 380.0 |" in text
    assert Cell("x", 1, 1).row()["errors"] == 0
