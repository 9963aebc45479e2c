"""Embedding benchmark (``make bench-embedding``): raw model against the service, torch and onnx.

Measures, on the same real texts (scripts/bench/texts.py):

* raw in-process throughput: batch 1, in-order batches of 32 (``encode(texts[i:i+32])``, the
  best a batcher can do without reordering across requests) and all texts sorted by length in
  batches of 32 (the ceiling), for torch and for ONNX Runtime fp32 and int8;
* the service over gRPC, started as its own process (``aimesh-embedding``), with 1, 8, 32 and
  64 concurrent clients sending one text per call and 4 clients sending 32 per call; the
  clients run in this process, not the server's;
* latency p50/p99 at concurrency 1 and 32.

Prints a table with ratios to the raw figures and writes it into docs/benchmarks.md between
the embedding markers. Needs the ONNX export (``make embedding-onnx``) for the onnx rows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from scripts.bench.doc import DOC, write_section
from scripts.bench.stats import percentile
from scripts.bench.texts import bench_texts
from scripts.devmesh import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVER = Path(sys.executable).parent / "aimesh-embedding"


@dataclass
class Row:
    name: str
    per_second: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    # 1-minute load average when the row was taken: on a shared machine, rows taken under
    # different loads do not compare.
    load: float = field(default_factory=lambda: os.getloadavg()[0])


def timed(run: Callable[[], object]) -> float:
    """Wall time of one run (callers warm the model up first)."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def raw_torch(texts: list[str], singles: list[str]) -> tuple[list[Row], float]:
    from aimesh_embedding.config import Settings
    from aimesh_embedding.model import load_encoder

    model = load_encoder(Settings(metrics_port=None))._model
    encode: Callable[..., Any] = model.encode

    def in_order() -> None:
        for chunk in chunks(texts, 32):
            encode(list(chunk), batch_size=32)

    encode(texts[:64], batch_size=32)  # warm-up
    latencies = []
    for text in singles:
        started = time.perf_counter()
        encode([text])
        latencies.append(time.perf_counter() - started)
    single_rate = len(singles) / sum(latencies)
    p50 = statistics.median(latencies) * 1000
    rows = [
        Row("torch raw, batch 1", single_rate, p50, percentile(latencies, 99) * 1000),
        Row("torch raw, in order, batch 32", len(texts) / timed(in_order)),
        Row(
            "torch raw, sorted, batch 32 (ceiling)",
            len(texts) / timed(lambda: encode(texts, batch_size=32)),
        ),
    ]
    return rows, p50


def raw_onnx(texts: list[str], onnx_dir: str) -> list[Row]:
    from aimesh_embedding.config import Settings
    from aimesh_embedding.onnx_backend import load_onnx_encoder

    rows = []
    for variant in ("fp32", "int8"):
        encoder = load_onnx_encoder(
            Settings(
                metrics_port=None,
                embedding_backend="onnx",
                embedding_onnx_dir=onnx_dir,
                embedding_onnx_variant=variant,
            )
        )
        ids = encoder.tokenize(texts, truncate=True)
        in_order = list(chunks(ids, 32))
        by_length = list(chunks(sorted(ids, key=len), 32))
        encoder.encode_ids(ids[:32])  # warm-up
        for label, batches in (("in order", in_order), ("sorted", by_length)):
            started = time.perf_counter()
            for batch in batches:
                encoder.encode_ids(batch)
            suffix = " (ceiling)" if label == "sorted" else ""
            rows.append(
                Row(
                    f"onnx {variant} raw, {label}, batch 32{suffix}",
                    len(texts) / (time.perf_counter() - started),
                )
            )
    return rows


@contextlib.contextmanager
def server_process(env: dict[str, str]) -> Iterator[str]:
    """``aimesh-embedding`` as its own process; yields its address once it serves."""
    with server_and_process(env) as (addr, _):
        yield addr


@contextlib.contextmanager
def server_and_process(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``aimesh-embedding`` as its own process; yields its address and process once it serves."""
    port = free_port()
    process = subprocess.Popen(
        [str(SERVER)],
        env={
            **os.environ,
            "AIMESH_HOST": "127.0.0.1",
            "AIMESH_PORT": str(port),
            "AIMESH_METRICS_PORT": "0",
            "AIMESH_LOG_LEVEL": "WARNING",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    addr = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _serving(addr):
            if process.poll() is not None:
                raise SystemExit(f"aimesh-embedding exited: {process.stderr.read()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise SystemExit("aimesh-embedding did not start in time")
            time.sleep(0.2)
        yield addr, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _serving(addr: str) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def load(
    addr: str, texts: list[str], clients: int, per_call: int
) -> tuple[float, list[float]]:
    """``clients`` closed-loop callers share one channel; returns texts/s and latencies."""
    calls = [list(chunk) for chunk in chunks(texts, per_call)]
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        # Warm the connection and the server's first batches.
        await asyncio.gather(
            *(stub.Embed(embedding_pb2.EmbedRequest(inputs=c, truncate=True)) for c in calls[:8])
        )
        pending = iter(calls)

        async def client() -> None:
            for inputs in pending:
                started = time.perf_counter()
                await stub.Embed(embedding_pb2.EmbedRequest(inputs=inputs, truncate=True))
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return len(texts) / elapsed, latencies


def service_rows(addr: str, backend: str, texts: list[str], full: bool) -> list[Row]:
    rows = []
    plans = [(1, 1), (8, 1), (32, 1), (64, 1), (4, 32)] if full else [(1, 1), (64, 1)]
    for clients, per_call in plans:
        # Concurrency 1 is latency-bound: a quarter of the texts is plenty.
        subset = texts[: len(texts) // 4] if clients == 1 else texts
        rate, latencies = asyncio.run(load(addr, subset, clients, per_call))
        name = f"{backend} service, {clients} clients x {per_call}/call"
        rows.append(
            Row(name, rate, statistics.median(latencies) * 1000, percentile(latencies, 99) * 1000)
        )
    return rows


def render(rows: list[Row], ceiling: float, in_order: float, notes: list[str]) -> str:
    lines = [
        "| measurement | texts/s | vs torch ceiling | vs torch in-order b32 | p50 ms | p99 ms "
        "| load avg |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        p50 = f"{row.p50_ms:.1f}" if row.p50_ms is not None else ""
        p99 = f"{row.p99_ms:.1f}" if row.p99_ms is not None else ""
        lines.append(
            f"| {row.name} | {row.per_second:.1f} | {row.per_second / ceiling:.2f}x | "
            f"{row.per_second / in_order:.2f}x | {p50} | {p99} | {row.load:.1f} |"
        )
    return "\n".join([*lines, "", *notes])


def write_doc(section: str) -> None:
    write_section("embedding", "Embedding service", section)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=600)
    parser.add_argument("--onnx-dir", default=os.environ.get("AIMESH_EMBEDDING_ONNX_DIR", ""))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    from aimesh_embedding.config import Settings
    from aimesh_embedding.model import TextTokenizer

    settings = Settings(metrics_port=None)
    onnx_dir = args.onnx_dir or settings.onnx_dir()
    have_onnx = os.path.isfile(os.path.join(onnx_dir, "model.onnx"))
    texts = bench_texts(args.texts)
    tokenizer = TextTokenizer(os.path.join(settings.embedding_model, "tokenizer.json"))
    lengths = sorted(len(ids) for ids in tokenizer.encode(texts))
    print(f"{len(texts)} texts; onnx export: {onnx_dir if have_onnx else 'missing'}", flush=True)

    rows, single_p50 = raw_torch(texts, texts[:100])
    in_order, ceiling = rows[1].per_second, rows[2].per_second
    print(render(rows, ceiling, in_order, []), flush=True)
    if have_onnx:
        rows += raw_onnx(texts, onnx_dir)
    with server_process({"AIMESH_EMBEDDING_BACKEND": "torch"}) as addr:
        rows += service_rows(addr, "torch", texts, full=True)
    if have_onnx:
        for variant in ("fp32", "int8"):
            env = {
                "AIMESH_EMBEDDING_BACKEND": "onnx",
                "AIMESH_EMBEDDING_ONNX_DIR": onnx_dir,
                "AIMESH_EMBEDDING_ONNX_VARIANT": variant,
            }
            with server_process(env) as addr:
                rows += service_rows(addr, f"onnx {variant}", texts, full=False)

    by_name = {row.name: row for row in rows}
    c64 = by_name["torch service, 64 clients x 1/call"]
    c32 = by_name["torch service, 32 clients x 1/call"]
    c1 = by_name["torch service, 1 clients x 1/call"]
    min_load = min(row.load for row in rows)
    max_load = max(row.load for row in rows)
    notes = [
        "`make bench-embedding` (scripts/bench/embedding.py). Raw rows call the model in this "
        "process; service rows go through gRPC to `aimesh-embedding` started as its own process "
        "(dynamic batcher: token budget AIMESH_EMBEDDING_MAX_BATCH_TOKENS, batches grown around "
        "the oldest waiting input in length order), with the load clients in the benchmark's "
        "process on one shared channel.",
        "",
        f"Taken {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {len(texts)} texts "
        f"(Python documentation sentences and a few paragraphs; tokens: median "
        f"{lengths[len(lengths) // 2]}, p95 {lengths[len(lengths) * 95 // 100]}, max "
        f"{lengths[-1]}, truncated at 256). "
        f"1-minute load average {min_load:.1f} to {max_load:.1f} on {os.cpu_count()} cores "
        "during the run (column `load avg`; the benchmark's own processes, the service and its "
        "clients, make up to about 2 of it): "
        + (
            "nothing else of weight ran, comparable conditions."
            if max_load < 2.5
            else "other jobs ran beside it, so rows taken under different loads do not "
            "compare and the ratios and targets below are NOT validated by this run; rerun on "
            "a quiet machine."
        ),
        "",
        f"- 64 single-text clients: {c64.per_second / ceiling:.0%} of the sorted ceiling "
        f"(target >= 70%), {c64.per_second / in_order:.2f}x the in-order batch-32 figure "
        "(target >= 1x).",
        f"- 32 single-text clients: {c32.per_second / ceiling:.0%} of the ceiling (target >= 60%).",
        f"- p50 at concurrency 1: {c1.p50_ms:.1f} ms against {single_p50:.1f} ms for a raw "
        f"single-text encode (target: at most +3 ms).",
    ]
    if have_onnx:
        for variant in ("fp32", "int8"):
            raw = by_name[f"onnx {variant} raw, sorted, batch 32 (ceiling)"].per_second
            service = by_name[f"onnx {variant} service, 64 clients x 1/call"].per_second
            notes.append(
                f"- onnx {variant}: raw ceiling {raw / ceiling:.2f}x torch's; through the "
                f"service at 64 clients {service / c64.per_second:.2f}x torch's service."
            )
    section = render(rows, ceiling, in_order, notes)
    print("\n" + section)
    if not args.no_write:
        write_doc(section)
        print(f"\nwritten to {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
