"""``make bench-peers``: aimesh side by side with LiteLLM's proxy and Infinity (issue 20 §1).

Everything runs on this machine, in one run, against the same upstream and the same model:

* **LLM path.** A lean OpenAI-protocol mock upstream (``scripts.bench.llm_path mock``: one
  fixed completion, far cheaper than what it serves) behind three systems: the mock itself
  (the floor), the LiteLLM proxy (master key, no database, no cache, one worker) and aimesh
  (gateway with an API key and the Redis rate limit, one worker, cache bypassed; llm-router
  with an ``openai`` alias on the mock). One open-loop generator sends uncached
  ``POST /v1/chat/completions`` at a constant arrival rate (``--rates``, default 100, 300,
  500 and 1000 a second, ``--seconds`` each, default 20), the systems interleaved cell by
  cell. Latency counts from each request's *scheduled* time, so a system that falls behind
  is charged its queue (no coordinated omission); a request still unanswered 10 s after its
  time is an error. Per cell: p50/p99/max, achieved rate, errors and the system's CPU
  seconds per answered request from ``/proc`` (its whole process tree: gateway + router for
  aimesh). Then, for each system, c=1 latency of the non-streamed call and the time to the
  first content chunk of a streamed one.
* **Embeddings.** Infinity (torch engine) and aimesh (gateway + embedding service, the
  service's default backend) on the same all-MiniLM-L6-v2 directory, ``/v1/embeddings``
  (Infinity: ``/embeddings``) with 64 closed-loop clients of one short text each, then
  batches of 32: texts per second and the cosine of the two systems' vectors for the same
  texts.

LiteLLM and Infinity are installed, pinned, into their own virtualenvs under
``.aimesh/peers/`` (never into ``.venv``) the first time. Nothing else heavy should run
meanwhile: the load average of each cell is printed with it. Writes its tables into
docs/benchmarks.md (``--no-write`` to only print).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aimesh_common.stats import percentile
from scripts.bench.gateway import (
    BIN,
    ROOT,
    gateway_env,
    process,
    user_key,
    wait_grpc,
    wait_http,
)
from scripts.bench.llm_path import cpu_seconds, mock_models_file
from scripts.bench.proc import tree
from scripts.devmesh import free_port

PEERS = ROOT / ".aimesh" / "peers"
LITELLM = ("litellm[proxy]==1.108.7",)
INFINITY = ("infinity-emb[server,torch]==0.0.78", "torch==2.13.0")
LITELLM_KEY = "sk-bench-" + "0" * 24
TIMEOUT = 10.0
CHAT = {"model": "default", "messages": [{"role": "user", "content": "Say four words."}]}


# ---------------------------------------------------------------- the peers' virtualenvs


def ensure_venv(name: str, requirements: Sequence[str]) -> Path:
    """``.aimesh/peers/<name>`` with ``requirements`` installed (once); its ``bin``."""
    venv = PEERS / name
    stamp = venv / ".installed"
    wanted = "\n".join(requirements)
    if stamp.exists() and stamp.read_text() == wanted:
        return venv / "bin"
    print(f"installing {', '.join(requirements)} into {venv} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *requirements], check=True)
    stamp.write_text(wanted)
    return venv / "bin"


# ---------------------------------------------------------------- a lean HTTP/1.1 client


def request_bytes(url: str, path: str, body: dict[str, Any], key: str) -> tuple[str, int, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        "Cache-Control: no-cache\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return host, int(port), head.encode() + data


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response: Content-Length or chunked (uvicorn streams chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked = -1, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(max(length, 0))
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status, b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


@dataclass
class Cell:
    """One system at one arrival rate."""

    system: str
    rate: float
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_seconds: float = 0.0
    load: float = 0.0

    def row(self) -> dict[str, Any]:
        ok = sorted(self.latencies)
        return {
            "system": self.system,
            "rate": self.rate,
            "achieved": len(ok) / self.seconds,
            "p50_ms": percentile(ok, 50) * 1000 if ok else math.nan,
            "p99_ms": percentile(ok, 99) * 1000 if ok else math.nan,
            "max_ms": ok[-1] * 1000 if ok else math.nan,
            "errors": self.errors,
            "cpu_ms_per_request": self.cpu_seconds * 1000 / len(ok) if ok else math.nan,
            "load": self.load,
        }


async def open_loop(host: str, port: int, request: bytes, rate: float, seconds: float) -> Cell:
    """Send ``request`` ``rate`` times a second for ``seconds``, each on an idle keep-alive
    connection or a new one; latency from the scheduled time."""
    cell = Cell("", rate, seconds)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    everyone: list[asyncio.StreamWriter] = []

    async def one(due: float) -> None:
        try:
            async with asyncio.timeout(max(0.1, due + TIMEOUT - time.perf_counter())):
                if idle:
                    reader, writer = idle.pop()
                else:
                    reader, writer = await asyncio.open_connection(host, port)
                    everyone.append(writer)
                writer.write(request)
                status, _ = await read_response(reader)
            if status == 200:
                cell.latencies.append(time.perf_counter() - due)
                idle.append((reader, writer))
            else:
                cell.errors += 1
                writer.close()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            cell.errors += 1

    tasks = []
    start = time.perf_counter() + 0.05
    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    for writer in everyone:
        writer.close()
    return cell


async def sequential(url: str, key: str, count: int, *, stream: bool) -> list[float]:
    """c=1: whole replies, or the time to the first content chunk of streamed ones."""
    times = []
    body = {**CHAT, "stream": True} if stream else CHAT
    headers = {"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=TIMEOUT) as client:
        for _ in range(count):
            started = time.perf_counter()
            if not stream:
                (await client.post("/v1/chat/completions", json=body)).raise_for_status()
                times.append(time.perf_counter() - started)
                continue
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                first = None
                async for line in response.aiter_lines():
                    data = line.replace(" ", "")
                    # The first delta with text (not the role-only first chunk).
                    text = '"content":"' in data and '"content":""' not in data
                    if first is None and data.startswith("data:") and text:
                        first = time.perf_counter() - started
                times.append(first if first is not None else time.perf_counter() - started)
    return times


# ---------------------------------------------------------------- the systems


@dataclass
class System:
    name: str
    url: str
    key: str
    pids: list[int]

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids:
            for each in tree(pid):
                with contextlib.suppress(OSError, IndexError):
                    total += cpu_seconds(each)
        return total


@contextlib.contextmanager
def llm_systems(work: Path, litellm_bin: Path | None) -> Iterator[list[System]]:
    mock_port, router_port, gateway_port = free_port(), free_port(), free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    models = mock_models_file(work, mock_port)
    common = {"AIMESH_DATA_DIR": str(work / "aimesh"), "AIMESH_LOG_LEVEL": "WARNING"}
    router_addr = f"127.0.0.1:{router_port}"
    with contextlib.ExitStack() as stack:
        mock = stack.enter_context(
            process(
                [sys.executable, "-m", "scripts.bench.llm_path", "mock", "--port", str(mock_port)]
            )
        )
        router = stack.enter_context(
            process(
                [str(BIN / "aimesh-llm-router")],
                {
                    **common,
                    "AIMESH_PORT": str(router_port),
                    "AIMESH_MODELS_FILE": str(models),
                    "BENCH_MOCK_KEY": "mock-key",
                },
                work / "llm-router.log",
            )
        )
        gateway = stack.enter_context(
            process(
                [str(BIN / "aimesh-gateway")],
                gateway_env(
                    common, gateway_port, router_addr, f"aimesh-peers-{uuid.uuid4().hex[:8]}:"
                ),
                work / "gateway.log",
            )
        )
        systems = [System("mock", mock_url, "mock-key", [mock.pid])]
        if litellm_bin is not None:
            litellm_port = free_port()
            config = work / "litellm.yaml"
            config.write_text(
                json.dumps(
                    {
                        "model_list": [
                            {
                                "model_name": "default",
                                "litellm_params": {
                                    "model": "openai/mock",
                                    "api_base": f"{mock_url}/v1",
                                    "api_key": "mock-key",
                                },
                            }
                        ],
                        "general_settings": {"master_key": LITELLM_KEY},
                        "litellm_settings": {"cache": False, "telemetry": False},
                    }
                )
            )
            litellm = stack.enter_context(
                process(
                    [
                        str(litellm_bin / "litellm"),
                        "--config",
                        str(config),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(litellm_port),
                        "--num_workers",
                        "1",
                    ],
                    {"LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "true"},
                    work / "litellm.log",
                )
            )
            litellm_url = f"http://127.0.0.1:{litellm_port}"
            wait_http(f"{litellm_url}/health/liveliness", timeout=180)
            systems.append(System("litellm", litellm_url, LITELLM_KEY, [litellm.pid]))
        wait_grpc(router_addr)
        aimesh_url = f"http://127.0.0.1:{gateway_port}"
        wait_http(f"{aimesh_url}/healthz")
        systems.append(
            System("aimesh", aimesh_url, user_key(aimesh_url), [gateway.pid, router.pid])
        )
        yield systems


async def _cell(system: System, rate: float, seconds: float) -> Cell:
    host, port, request = request_bytes(system.url, "/v1/chat/completions", CHAT, system.key)
    before = system.cpu()
    cell = await open_loop(host, port, request, rate, seconds)
    cell.cpu_seconds = system.cpu() - before
    cell.system = system.name
    cell.load = os.getloadavg()[0]
    return cell


def run_llm(args: argparse.Namespace, work: Path, litellm_bin: Path | None) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    single: dict[str, dict[str, float]] = {}
    with llm_systems(work, litellm_bin) as systems:
        for system in systems:  # warm-up: connections, imports, first requests
            asyncio.run(_cell(system, 50, 2))
        for rate in args.rates:
            for system in systems:  # interleaved: every system at this rate, then the next
                cell = asyncio.run(_cell(system, rate, args.seconds))
                row = cell.row()
                rows.append(row)
                print(
                    f"  {row['system']:<8} {rate:6.0f}/s: achieved {row['achieved']:7.1f}/s "
                    f"p50 {row['p50_ms']:8.2f} p99 {row['p99_ms']:8.2f} max {row['max_ms']:8.1f}"
                    f" ms, errors {row['errors']}, CPU {row['cpu_ms_per_request']:.2f} ms/req, "
                    f"load {row['load']:.2f}",
                    flush=True,
                )
        for system in systems:
            whole = asyncio.run(sequential(system.url, system.key, args.single, stream=False))
            first = asyncio.run(sequential(system.url, system.key, args.single, stream=True))
            single[system.name] = {
                "c1_p50_ms": percentile(sorted(whole), 50) * 1000,
                "c1_p99_ms": percentile(sorted(whole), 99) * 1000,
                "ttft_p50_ms": percentile(sorted(first), 50) * 1000,
            }
            print(f"  {system.name:<8} c=1 {single[system.name]}", flush=True)
    return {"cells": rows, "single": single}


# ---------------------------------------------------------------- embeddings


def model_dir() -> str:
    from aimesh_embedding.config import packaged_model_dir

    return packaged_model_dir()


async def closed_loop(
    url: str,
    path: str,
    key: str,
    model: str,
    texts: list[str],
    clients: int,
    batch: int,
    seconds: float,
) -> tuple[float, int]:
    """``clients`` callers, each sending ``batch`` texts at a time for ``seconds``: texts/s."""
    done, errors = 0, 0
    end = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as c:

        async def caller(offset: int) -> None:
            nonlocal done, errors
            i = offset
            while time.perf_counter() < end:
                chunk = [texts[(i + k) % len(texts)] + f" #{i}" for k in range(batch)]
                i += clients * batch
                reply = await c.post(path, json={"model": model, "input": chunk})
                if reply.status_code == 200:
                    done += batch
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller(n * batch) for n in range(clients)))
        return done / (time.perf_counter() - started), errors


async def vectors(url: str, path: str, key: str, model: str, texts: list[str]) -> list[list[float]]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        reply = await client.post(path, json={"model": model, "input": texts})
        reply.raise_for_status()
        return [item["embedding"] for item in reply.json()["data"]]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def run_embeddings(args: argparse.Namespace, work: Path, infinity_bin: Path) -> dict[str, Any]:
    from scripts.bench.texts import bench_texts

    texts = bench_texts(1000, seed=20, long_share=0.0)
    directory = model_dir()
    embed_port, gateway_port, infinity_port = free_port(), free_port(), free_port()
    common = {"AIMESH_DATA_DIR": str(work / "aimesh-emb"), "AIMESH_LOG_LEVEL": "WARNING"}
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        embedding = stack.enter_context(
            process(
                [str(BIN / "aimesh-embedding")],
                {**common, "AIMESH_PORT": str(embed_port), "AIMESH_METRICS_PORT": "0"},
                work / "embedding.log",
            )
        )
        env = gateway_env(
            common, gateway_port, "127.0.0.1:1", f"aimesh-peers-{uuid.uuid4().hex[:8]}:"
        )
        env["EMBEDDING_SERVICE_ADDR"] = f"127.0.0.1:{embed_port}"
        gateway = stack.enter_context(
            process([str(BIN / "aimesh-gateway")], env, work / "gateway-emb.log")
        )
        infinity = stack.enter_context(
            process(
                [
                    str(infinity_bin / "infinity_emb"),
                    "v2",
                    "--model-id",
                    directory,
                    "--served-model-name",
                    "all-MiniLM-L6-v2",
                    "--engine",
                    "torch",
                    "--device",
                    "cpu",
                    "--port",
                    str(infinity_port),
                    "--host",
                    "127.0.0.1",
                    "--no-model-warmup",
                ],
                {"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"},
                work / "infinity.log",
            )
        )
        wait_grpc(f"127.0.0.1:{embed_port}", timeout=180)
        aimesh_url = f"http://127.0.0.1:{gateway_port}"
        wait_http(f"{aimesh_url}/healthz")
        infinity_url = f"http://127.0.0.1:{infinity_port}"
        wait_http(f"{infinity_url}/health", timeout=300)
        key = user_key(aimesh_url)
        targets = {
            "infinity": (infinity_url, "/embeddings", "none", "all-MiniLM-L6-v2", [infinity.pid]),
            "aimesh": (
                aimesh_url,
                "/v1/embeddings",
                key,
                "all-MiniLM-L6-v2",
                [gateway.pid, embedding.pid],
            ),
        }
        for url, path, k, model, _ in targets.values():  # warm-up
            asyncio.run(closed_loop(url, path, k, model, texts, 8, 1, 3))
        for clients, batch in ((64, 1), (8, 32)):
            for name, (url, path, k, model, pids) in targets.items():
                system = System(name, url, k, pids)
                before = system.cpu()
                rate, errors = asyncio.run(
                    closed_loop(url, path, k, model, texts, clients, batch, args.seconds)
                )
                cpu = system.cpu() - before
                label = f"{clients} clients x {batch}"
                results.setdefault(label, {})[name] = {
                    "texts_per_s": rate,
                    "errors": errors,
                    "cpu_ms_per_text": cpu * 1000 / max(1.0, rate * args.seconds),
                    "load": os.getloadavg()[0],
                }
                print(f"  {name:<8} {label}: {rate:.1f} texts/s, errors {errors}", flush=True)
        sample = texts[:16]
        a = asyncio.run(vectors(aimesh_url, "/v1/embeddings", key, "all-MiniLM-L6-v2", sample))
        b = asyncio.run(vectors(infinity_url, "/embeddings", "none", "all-MiniLM-L6-v2", sample))
        results["min_cosine"] = min(cosine(x, y) for x, y in zip(a, b, strict=True))
    return results


# ---------------------------------------------------------------- report


def render(llm: dict[str, Any] | None, emb: dict[str, Any] | None) -> str:
    lines = []
    if llm:
        lines += [
            "LLM path, uncached `POST /v1/chat/completions` against the mock upstream, open loop:",
            "",
            "| rate /s | system | achieved /s | p50 ms | p99 ms | max ms | errors | CPU ms/req "
            "| load |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in llm["cells"]:
            lines.append(
                f"| {row['rate']:.0f} | {row['system']} | {row['achieved']:.1f} | "
                f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['max_ms']:.1f} | "
                f"{row['errors']} | {row['cpu_ms_per_request']:.2f} | {row['load']:.2f} |"
            )
        lines += ["", "| system | c=1 p50 ms | c=1 p99 ms | stream first chunk p50 ms |"]
        lines += ["|---|---:|---:|---:|"]
        for name, figures in llm["single"].items():
            lines.append(
                f"| {name} | {figures['c1_p50_ms']:.2f} | {figures['c1_p99_ms']:.2f} | "
                f"{figures['ttft_p50_ms']:.2f} |"
            )
        lines += ["", *ratios(llm)]
    if emb:
        lines += [
            "",
            "Embeddings, all-MiniLM-L6-v2 on both, closed loop:",
            "",
            "| load shape | system | texts/s | errors | CPU ms/text | load |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for label, by in emb.items():
            if not isinstance(by, dict):
                continue
            for name, f in by.items():
                lines.append(
                    f"| {label} | {name} | {f['texts_per_s']:.1f} | {f['errors']} | "
                    f"{f['cpu_ms_per_text']:.2f} | {f['load']:.2f} |"
                )
            if {"aimesh", "infinity"} <= set(by):
                ratio = by["aimesh"]["texts_per_s"] / max(by["infinity"]["texts_per_s"], 1e-9)
                lines.append(f"| {label} | **aimesh / infinity** | **{ratio:.2f}x** | | | |")
        lines.append(f"\nLowest cosine between the two systems' vectors: {emb['min_cosine']:.4f}")
    return "\n".join(lines)


def sustained(rows: list[dict[str, Any]], system: str) -> float:
    """The highest achieved rate of a cell with no error and p99 under 1 s."""
    good = [
        r["achieved"]
        for r in rows
        if r["system"] == system and r["errors"] == 0 and r["p99_ms"] < 1000
    ]
    return max(good, default=0.0)


def ratios(llm: dict[str, Any]) -> list[str]:
    rows, single = llm["cells"], llm["single"]
    names = sorted({r["system"] for r in rows} - {"mock", "aimesh"})
    out = []
    for peer in names:
        ours, theirs = sustained(rows, "aimesh"), sustained(rows, peer)
        cpu_ours = [r["cpu_ms_per_request"] for r in rows if r["system"] == "aimesh"]
        cpu_theirs = [r["cpu_ms_per_request"] for r in rows if r["system"] == peer]
        rate_ratio = f"{ours / theirs:.2f}x" if theirs else "n/a (the peer sustained no rate)"
        out.append(
            f"aimesh / {peer}: sustained rate (0 errors, p99 < 1 s) {ours:.0f} / {theirs:.0f} = "
            f"{rate_ratio}; c=1 p50 "
            f"{single[peer]['c1_p50_ms'] / single['aimesh']['c1_p50_ms']:.2f}x lower; "
            f"CPU per request {min(cpu_theirs) / min(cpu_ours):.2f}x less"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[100, 300, 500, 1000])
    parser.add_argument("--seconds", type=float, default=20.0, help="Per cell")
    parser.add_argument("--single", type=int, default=200, help="Requests of the c=1 runs")
    parser.add_argument("--only", choices=["llm", "embeddings"], help="Run one part")
    parser.add_argument("--no-peers", action="store_true", help="aimesh and the mock only")
    parser.add_argument("--json", type=Path, help="Write every figure here")
    parser.add_argument("--no-write", action="store_true", help="Do not touch docs/benchmarks.md")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="aimesh-bench-peers-"))
    print(f"logs in {work}; load average {os.getloadavg()[0]:.2f}", flush=True)
    llm = emb = None
    if args.only in (None, "llm"):
        litellm_bin = None if args.no_peers else ensure_venv("litellm", LITELLM)
        llm = run_llm(args, work, litellm_bin)
    if args.only in (None, "embeddings") and not args.no_peers:
        emb = run_embeddings(args, work, ensure_venv("infinity", INFINITY))
    text = render(llm, emb)
    print("\n" + text, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"llm": llm, "embeddings": emb}, indent=1))
    if not args.no_write:
        from scripts.bench.doc import write_section

        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        header = (
            f"Measured {stamp} by `make bench-peers` (scripts/bench/peers.py), "
            f"{args.seconds:g} s per cell, load average at each cell in its row.\n\n"
        )
        write_section("peers", "Peers: LiteLLM and Infinity", header + text)


if __name__ == "__main__":
    main()
