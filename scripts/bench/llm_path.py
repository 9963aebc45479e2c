"""Where the LLM path's CPU goes (issue 20 §2): ``python -m scripts.bench.llm_path``.

One run starts, each in its own process: a lean OpenAI-protocol mock upstream (a raw asyncio
server answering one fixed completion, far cheaper than what it serves), the real llm-router
with one ``openai`` alias on it, and the real gateway (one worker, API key, Redis rate
limit, metrics, access log; the response cache bypassed). A lean keep-alive client sends
uncached ``POST /v1/chat/completions`` at a fixed concurrency and the script reads each
process's CPU seconds from ``/proc`` before and after: CPU milliseconds per request is a
figure that depends far less on what else runs on the machine than latency does.

``--profile`` also samples both processes with py-spy while the load runs and prints the
functions where each spends its time (own time, and time under each aimesh function).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from scripts.bench.gateway import (
    BIN,
    RawHttp,
    gateway_env,
    process,
    user_key,
    wait_grpc,
    wait_http,
)
from scripts.devmesh import free_port

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 0,
        "model": "mock",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Four words of answer."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
).encode()
CHUNKS: list[dict[str, Any]] = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    *({"choices": [{"index": 0, "delta": {"content": w}}]} for w in ("Four ", "words ", "of ")),
    {"choices": [{"index": 0, "delta": {"content": "answer."}, "finish_reason": "stop"}]},
    {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}},
]
STREAM = (
    "".join(
        f"data: {json.dumps({'id': 'c', 'object': 'chat.completion.chunk', **c})}\n\n"
        for c in CHUNKS
    )
    + "data: [DONE]\n\n"
).encode()


# ---------------------------------------------------------------- mock upstream (own process)


async def _mock_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            if b'"stream":true' in body.replace(b" ", b""):
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    + f"Content-Length: {len(STREAM)}\r\n\r\n".encode()
                    + STREAM
                )
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(COMPLETION)}\r\n\r\n".encode()
                    + COMPLETION
                )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def mock_main(args: argparse.Namespace) -> None:
    async def serve() -> None:
        server = await asyncio.start_server(_mock_connection, "127.0.0.1", args.port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


# ---------------------------------------------------------------- the run


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(target: str, key: str, body: bytes, concurrency: int, requests: int) -> float:
    args = argparse.Namespace(
        target=target,
        path="/v1/chat/completions",
        body=body.decode(),
        credential=key,
        no_cache=True,
    )
    raw = RawHttp.prepare(args)
    await raw.open(concurrency)
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await raw.call()

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await raw.close()
    return time.perf_counter() - started


def _py_spy(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(BIN / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "--gil",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _frame(entry: str) -> str:
    """``function (path/to/file.py:line)`` -> ``function (file.py)``."""
    name, _, where = entry.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{name} ({file})"


def report(collapsed: Path, top: int) -> str:
    """Own time per function, and inclusive time per aimesh function, in % of samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if "(idle)" in stack or frames[-1].startswith("select ") or "epoll" in frames[-1]:
            continue
        total += count
        own[_frame(frames[-1])] += count
        for name in {_frame(f) for f in frames if "aimesh" in f or "/grpc/" in f}:
            inclusive[name] += count
    lines = [f"  {total} busy samples"]
    lines.append("  own time:")
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("  under (inclusive), aimesh and grpc frames:")
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def mock_models_file(folder: Path, mock_port: int) -> Path:
    """A models file with one ``openai`` alias, ``default``, on the mock upstream (its key in
    ``BENCH_MOCK_KEY``, no retries), for the llm-router."""
    models = folder / "models.yaml"
    models.write_text(
        json.dumps(
            {
                "models": {
                    "default": {
                        "provider": "openai",
                        "model": "mock",
                        "base_url": f"http://127.0.0.1:{mock_port}/v1",
                        "api_key_env": "BENCH_MOCK_KEY",
                        "max_retries": 0,
                    }
                }
            }
        )
    )
    return models


def bench_main(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="aimesh-bench-llm-path-"))
    print(f"service logs in {data_dir}; load average {os.getloadavg()[0]:.2f}", flush=True)
    mock_port, router_port, gateway_port = free_port(), free_port(), free_port()
    router_addr = f"127.0.0.1:{router_port}"
    models = mock_models_file(data_dir, mock_port)
    common = {"AIMESH_DATA_DIR": str(data_dir), "AIMESH_LOG_LEVEL": "WARNING"}
    with (
        process([sys.executable, "-m", "scripts.bench.llm_path", "mock", "--port", str(mock_port)]),
        process(
            [str(BIN / "aimesh-llm-router")],
            {
                **common,
                "AIMESH_PORT": str(router_port),
                "AIMESH_MODELS_FILE": str(models),
                "BENCH_MOCK_KEY": "mock-key",
            },
            data_dir / "llm-router.log",
        ) as router,
        process(
            [str(BIN / "aimesh-gateway")],
            gateway_env(common, gateway_port, router_addr, f"aimesh-bench-{uuid.uuid4().hex[:8]}:"),
            data_dir / "gateway.log",
        ) as gateway_process,
    ):
        wait_grpc(router_addr)
        gateway = f"http://127.0.0.1:{gateway_port}"
        wait_http(f"{gateway}/healthz")
        key = user_key(gateway)
        pids = {"gateway": gateway_process.pid, "router": router.pid}
        body = json.dumps(
            {"model": "default", "messages": [{"role": "user", "content": "Say four words."}]}
        ).encode()
        asyncio.run(_drive(gateway, key, body, args.concurrency, 200))  # warm-up
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        spies = []
        if args.profile:
            seconds = max(5, int(args.requests / 150))
            spies = [
                (
                    name,
                    _py_spy(pid, seconds, data_dir / f"{name}.txt"),
                    data_dir / f"{name}.txt",
                )
                for name, pid in pids.items()
            ]
        elapsed = asyncio.run(_drive(gateway, key, body, args.concurrency, args.requests))
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        per = {name: 1000 * (after[name] - before[name]) / args.requests for name in pids}
        print(
            f"non-streamed, c={args.concurrency}, {args.requests} requests: "
            f"{args.requests / elapsed:.0f} req/s; CPU ms per request: "
            + ", ".join(f"{name} {ms:.2f}" for name, ms in per.items())
            + f"; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        for name, spy, out in spies:
            spy.wait(timeout=120)
            if out.exists():
                print(f"{name}:\n{report(out, args.top)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command")
    mock = sub.add_parser("mock")
    mock.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    if args.command == "mock":
        mock_main(args)
    else:
        bench_main(args)


if __name__ == "__main__":
    main()
