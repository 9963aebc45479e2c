"""What each service's memory costs (``make bench-memory``): the figures of the Memory table
in docs/operations.md, from which an operator sets Kubernetes memory limits.

The mesh runs as in ``make run`` (four processes, embedded defaults: Milvus Lite inside the
retrieval process, SQLite, the in-process cache), plus one local HTTP server speaking the
OpenAI streaming protocol slowly (one chunk a second) behind the alias ``slow``, so that
streams stay open while they are counted. Measured from the kernel (VmRSS of each service's
process tree, /proc):

* **at rest**: each service just after start, and after one request of every kind (warm);
* **per cached byte**: the gateway before and after filling its response cache with
  embeddings responses (``aimesh_cache_bytes`` says how many bytes it holds);
* **per open stream**: the gateway and the llm-router with ``--streams`` chat completion
  streams open at once, against the same processes with none;
* **per stored chunk**: the retrieval process while ``--chunks`` one-chunk documents are
  stored, in steps (least-squares slope per chunk).

RSS differences are noisy at the scale of a few MiB (the allocator keeps freed pages); the
steps are sized so that each difference is tens of MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from scripts.bench.proc import tree_mib
from scripts.bench.texts import bench_texts
from scripts.devmesh import Mesh, Ports, free_port

SERVICES = ("gateway", "embedding", "retrieval", "llm-router")


class SlowStreams:
    """An OpenAI-compatible chat server whose streams send one chunk a second for ``hold`` s."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.port = free_port()
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "slow",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "slow"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "ok"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )

        async def chunks() -> AsyncIterator[bytes]:
            started = time.monotonic()
            while time.monotonic() - started < self.hold:
                chunk = {
                    "id": "slow",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "slow",
                    "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": None}],
                }
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(1.0)
            last = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode()

        return StreamingResponse(chunks(), media_type="text/event-stream")

    def __enter__(self) -> SlowStreams:
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("the slow stream server did not start")

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def rss(mesh: Mesh) -> dict[str, float]:
    """MiB resident per service (process tree)."""
    figures = {}
    for name in SERVICES:
        process = mesh.service(name).process
        assert process is not None
        figures[name] = tree_mib(process.pid)
    return figures


def settle(mesh: Mesh, seconds: float = 3.0) -> dict[str, float]:
    """RSS after a short pause, so work just finished has released what it frees."""
    time.sleep(seconds)
    return rss(mesh)


def cache_bytes(client: httpx.Client) -> float:
    found = re.search(r"^aimesh_cache_bytes (\S+)$", client.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


async def open_streams(url: str, key: str, count: int, hold: float, mesh: Mesh) -> dict[str, Any]:
    """``count`` streams open at once; RSS measured while all are open."""
    opened = asyncio.Event()
    started = 0
    limits = httpx.Limits(max_connections=count + 10)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=hold + 60, limits=limits, trust_env=False
    ) as client:

        async def one(index: int) -> None:
            nonlocal started
            body = {
                "model": "slow",
                "stream": True,
                "messages": [{"role": "user", "content": f"stream {index}"}],
            }
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                first = True
                async for _ in response.aiter_lines():
                    if first:
                        first = False
                        started += 1
                        if started == count:
                            opened.set()

        tasks = [asyncio.create_task(one(i)) for i in range(count)]
        await asyncio.wait_for(opened.wait(), timeout=hold)
        await asyncio.sleep(2.0)
        during = await asyncio.to_thread(rss, mesh)
        await asyncio.gather(*tasks)
    return {"open": started, "during": during}


def measure(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with SlowStreams(hold=args.stream_seconds) as slow:
        models = data / "models.yaml"
        models.write_text(
            "models:\n"
            "  default: {provider: local}\n"
            f"  slow: {{provider: openai, base_url: 'http://127.0.0.1:{slow.port}/v1', "
            "model: slow, max_retries: 0, timeout_seconds: 600, deadline_seconds: 900}\n"
        )
        mesh = Mesh(
            data / "mesh",
            ports=Ports.free(),
            log_dir=data / "logs",
            extra_env={
                "AIMESH_MODELS_FILE": str(models),
                "AIMESH_CACHE_TTL_SECONDS": "3600",
                "AIMESH_REDIS_URL": None,
                "AIMESH_MILVUS_URI": None,
                "AIMESH_DATABASE_URL": None,
                "OPENAI_API_KEY": None,
                "AIMESH_LLM_LOCAL_MODEL_URL": None,
            },
        )
        with mesh:
            headers = {"Authorization": f"Bearer {mesh.admin_api_key}"}
            texts = bench_texts(1200, long_share=0.0)
            with httpx.Client(
                base_url=mesh.url, headers=headers, timeout=600, trust_env=False
            ) as client:
                result["rest"] = settle(mesh)
                model = next(
                    card["id"]
                    for card in client.get("/v1/models").json()["data"]
                    if str(card.get("description", "")).startswith("Embedding model")
                )
                client.post("/v1/collections", json={"name": "mem"}).raise_for_status()
                docs = [{"id": f"w{i}", "text": texts[i]} for i in range(10)]
                client.post("/v1/collections/mem/documents", json={"documents": docs})
                for route, body in (
                    ("/v1/collections/mem/search", {"query": texts[20]}),
                    ("/v1/ask", {"question": texts[21], "collection": "mem"}),
                    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                    ("/v1/embeddings", {"model": model, "input": [texts[22]] * 32}),
                ):
                    client.post(route, json=body).raise_for_status()
                result["warm"] = settle(mesh)
                print(f"  at rest {result['rest']}\n  warm {result['warm']}", flush=True)

                # Per cached byte: batches of 32 distinct texts, each response one entry.
                before, bytes_before = settle(mesh)["gateway"], cache_bytes(client)
                for batch in range(args.cache_batches):
                    inputs = [
                        f"{texts[(batch * 32 + k) % len(texts)]} #{batch}-{k}" for k in range(32)
                    ]
                    client.post(
                        "/v1/embeddings", json={"model": model, "input": inputs}
                    ).raise_for_status()
                after, bytes_after = settle(mesh)["gateway"], cache_bytes(client)
                result["cache"] = {
                    "cached_mib": (bytes_after - bytes_before) / 2**20,
                    "gateway_mib": after - before,
                }
                print(f"  cache {result['cache']}", flush=True)

                # Per open stream.
                quiet = settle(mesh)
                streams = asyncio.run(
                    open_streams(
                        mesh.url, mesh.admin_api_key, args.streams, args.stream_seconds, mesh
                    )
                )
                result["streams"] = {"count": streams["open"], "before": quiet, **streams}
                print(f"  streams {result['streams']}", flush=True)

                # Per stored chunk: one-sentence documents (one chunk each), in steps.
                points: list[tuple[int, float]] = [(0, settle(mesh)["retrieval"])]
                stored = 0
                step = args.chunks // args.steps
                for index in range(args.steps):
                    docs = [
                        {"id": f"c{index}-{k}", "text": texts[(index * step + k) % len(texts)]}
                        for k in range(step)
                    ]
                    for start in range(0, step, 100):  # the retrieval service's limit
                        client.post(
                            "/v1/collections/mem/documents",
                            json={"documents": docs[start : start + 100]},
                        ).raise_for_status()
                    stored += step
                    points.append((stored, settle(mesh, 2.0)["retrieval"]))
                    print(f"  {stored} chunks: retrieval {points[-1][1]:.1f} MiB", flush=True)
                result["chunks"] = {"points": points}
                client.delete("/v1/collections/mem")
                result["after_delete"] = settle(mesh, 5.0)
    return result


def render(result: dict[str, Any]) -> str:
    rest, warm = result["rest"], result["warm"]
    cache = result["cache"]
    streams = result["streams"]
    count = max(1, streams["count"])
    per_stream = {
        name: (streams["during"][name] - streams["before"][name]) * 1024 / count
        for name in ("gateway", "llm-router")
    }
    points = result["chunks"]["points"]
    # The first step carries one-time costs (the first flush loads the Parquet writer and
    # starts Milvus Lite's index and compaction workers): the slope is fitted after it.
    later = points[1:] if len(points) > 2 else points
    per_chunk = slope([p[0] for p in later], [p[1] for p in later]) * 1024 * 1024  # bytes
    first_jump = points[1][1] - points[0][1] if len(points) > 1 else 0.0
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on the shared 2-core machine "
        f"(1-minute load average {os.getloadavg()[0]:.1f}), `make run`'s processes on "
        "embedded defaults; VmRSS of each process tree.",
        "",
        "| service | at rest MiB | warm MiB |",
        "|---|---:|---:|",
        *(f"| {name} | {rest[name]:.0f} | {warm[name]:.0f} |" for name in SERVICES),
        "",
        f"- per cached byte (gateway): {cache['gateway_mib']:.1f} MiB resident for "
        f"{cache['cached_mib']:.1f} MiB counted by `aimesh_cache_bytes` "
        f"({cache['gateway_mib'] / cache['cached_mib']:.2f} bytes per counted byte)"
        if cache["cached_mib"] > 0
        else "- per cached byte: nothing was cached",
        f"- per open stream ({streams['count']} open at once): gateway "
        f"{per_stream['gateway']:.0f} KiB, llm-router {per_stream['llm-router']:.0f} KiB",
        f"- per stored chunk (Milvus Lite, in the retrieval process): {per_chunk / 1024:.1f} KiB "
        f"after the first {points[1][0] if len(points) > 1 else 0} chunks, which cost "
        f"{first_jump:+.0f} MiB once ({points[-1][0]} one-sentence chunks: "
        f"{points[0][1]:.0f} -> {points[-1][1]:.0f} MiB); after the collection was deleted: "
        f"{result['after_delete']['retrieval']:.0f} MiB",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--stream-seconds", type=float, default=30.0)
    parser.add_argument("--cache-batches", type=int, default=120, help="Embedding batches of 32")
    parser.add_argument("--chunks", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aimesh-bench-memory-") as folder:
        result = measure(args, Path(folder))
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
