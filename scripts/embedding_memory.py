"""Does the embedding service's memory stay flat under varied traffic? (issue 28)

Starts ``aimesh-embedding`` as its own process (as ``make run`` does; ``--env NAME=VALUE``
adds or overrides settings, so two runs compare one setting A/B), then for ``--seconds``
sends an open-loop load of ``--rate`` Embed calls a second (Poisson arrivals) shaped like the
soak's embedding traffic, every text new:

* 75 % one text (a search or ask query, an embeddings request of one sentence),
* 20 % 2-8 texts,
* 5 % 16-64 texts (a document's chunks), one in twenty-five a whole paragraph,

so the dynamic batcher runs batches of many different (inputs, tokens) shapes. Every
``--sample-every`` seconds it reads the service's VmRSS from /proc, prints the curve, and at
the end the RSS at start, after ``--warmup`` and at the end, the least-squares slope after
the warm-up (MiB per hour and as a share of the size), and the inputs embedded per second
(indicative only on a shared machine: compare runs made back to back).

    python -m scripts.embedding_memory --seconds 240 --env AIMESH_EMBEDDING_BACKEND=onnx
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from scripts.bench.embedding import server_and_process
from scripts.bench.proc import tree_mib
from scripts.bench.stats import percentile
from scripts.bench.texts import bench_texts


@dataclass
class Result:
    """The RSS curve of one run and what the load achieved."""

    env: dict[str, str]
    at: list[float] = field(default_factory=list)
    mib: list[float] = field(default_factory=list)
    calls: int = 0
    inputs: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)


class Texts:
    """New texts forever: real sentences and paragraphs, each made unique by a counter."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.pool = bench_texts(1000, seed=seed, long_share=0.04)
        self.count = 0

    def take(self, count: int) -> list[str]:
        texts = []
        for _ in range(count):
            self.count += 1
            texts.append(f"{self.rng.choice(self.pool)} ({self.count})")
        return texts

    def call_size(self) -> int:
        pick = self.rng.random()
        if pick < 0.75:
            return 1
        if pick < 0.95:
            return self.rng.randint(2, 8)
        return self.rng.randint(16, 64)


def slope_per_hour(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (seconds), per hour."""
    if len(xs) < 2:
        return 0.0
    mean_x = sum(xs) / len(xs)
    mean_y = sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return 0.0
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return cov / var * 3600


async def drive(addr: str, pid: int, args: argparse.Namespace, result: Result) -> None:
    texts = Texts(args.seed)
    rng = random.Random(args.seed + 1)
    in_flight: set[asyncio.Task[None]] = set()
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)

        async def one(inputs: list[str]) -> None:
            started = time.perf_counter()
            try:
                await stub.Embed(
                    embedding_pb2.EmbedRequest(inputs=inputs, truncate=True), timeout=60
                )
                result.latencies.append(time.perf_counter() - started)
                result.calls += 1
                result.inputs += len(inputs)
            except grpc.RpcError:
                result.errors += 1

        async def sample() -> None:
            started = time.monotonic()
            while True:
                at = time.monotonic() - started
                result.at.append(round(at, 1))
                result.mib.append(round(tree_mib(pid), 1))
                print(f"{at:7.0f} s  {result.mib[-1]:7.1f} MiB  calls {result.calls}", flush=True)
                await asyncio.sleep(args.sample_every)

        sampler = asyncio.create_task(sample())
        started = time.monotonic()
        next_at = started
        while next_at - started < args.seconds:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if len(in_flight) < args.max_in_flight:
                task = asyncio.create_task(one(texts.take(texts.call_size())))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            next_at += rng.expovariate(args.rate)
        if in_flight:
            await asyncio.wait(in_flight)
        result.seconds = time.monotonic() - started
        await asyncio.sleep(0.5)
        result.at.append(round(result.seconds, 1))
        result.mib.append(round(tree_mib(pid), 1))
        sampler.cancel()


def report(result: Result, warmup: float) -> dict[str, Any]:
    after = [(x, y) for x, y in zip(result.at, result.mib, strict=True) if x >= warmup]
    xs = [x for x, _ in after]
    ys = [y for _, y in after]
    slope = slope_per_hour(xs, ys)
    warm = ys[0] if ys else result.mib[-1]
    summary = {
        "env": result.env,
        "start_mib": result.mib[0],
        "after_warmup_mib": warm,
        "end_mib": result.mib[-1],
        "peak_mib": max(result.mib),
        "slope_mib_per_hour": round(slope, 1),
        "slope_pct_per_hour": round(100 * slope / warm, 1) if warm else 0.0,
        "calls": result.calls,
        "inputs_per_second": round(result.inputs / result.seconds, 1) if result.seconds else 0,
        "p50_ms": round(1000 * percentile(result.latencies, 50), 1) if result.latencies else None,
        "p95_ms": round(1000 * percentile(result.latencies, 95), 1) if result.latencies else None,
        "errors": result.errors,
        "load_average": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--rate", type=float, default=8.0, help="Embed calls per second")
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the service")
    parser.add_argument("--json", help="write the curve and summary to this file")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    result = Result(env=env)
    with server_and_process(env) as (addr, process):
        asyncio.run(drive(addr, process.pid, args, result))
    summary = report(result, args.warmup)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({"summary": summary, "curve": asdict(result)}, file)


if __name__ == "__main__":
    main()
