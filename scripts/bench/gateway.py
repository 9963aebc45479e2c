"""Gateway benchmark (``make bench-gateway``): what the gateway adds over a direct gRPC call.

In one run, against one real llm-router process (``ListModels``, no model work), with the load
client in its own process:

* (a) the router called directly over gRPC (grpc.aio);
* (b) the same call through a bare FastAPI route that only proxies it (uvicorn, own process);
* (c) the same call through the real gateway (``GET /v1/models``: API-key authentication,
  Redis rate limit, metrics, access log, proxy), own process;
* (d) a cached route of the real gateway (``POST .../search`` answered from the Redis cache).

Prints p50/p99 at concurrency 1 and 32 and requests/s, the differences (c)-(b) and (c)-(a),
and writes the table into docs/benchmarks.md between the gateway markers.

``python -m scripts.bench.gateway profile`` instead runs route (c) in one process under
cProfile (gateway app through httpx's ASGI transport, a real llm-router on a local port, the
same Redis) and prints the per-request counts that do not depend on machine load (function
calls, event-loop iterations, thread-pool hand-offs) and the costliest gateway functions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from scripts.bench.doc import write_section
from scripts.bench.stats import percentile
from scripts.devmesh import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ADMIN_KEY = "bench-admin-key-" + "0" * 16
ROUNDS = 5  # concurrency-32 rounds per path, see run_rounds
REDIS_URL = os.environ.get("AIMESH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


# ---------------------------------------------------------------- load client (own process)


async def _measure(
    call: Callable[[], Awaitable[None]], concurrency: int, total: int
) -> dict[str, Any]:
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    # Warm-up, as many at once as measured, so every keep-alive connection is open.
    for _ in range(max(1, min(50, total // 10) // concurrency)):
        await asyncio.gather(*(call() for _ in range(concurrency)))
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return summary([x * 1000 for x in latencies], elapsed)


def summary(latencies_ms: list[float], elapsed: float) -> dict[str, Any]:
    """p50, p99, requests/s, and the latencies themselves (to pool rounds)."""
    return {
        "p50_ms": statistics.median(latencies_ms),
        "p99_ms": percentile(latencies_ms, 99),
        "rps": len(latencies_ms) / elapsed,
        "elapsed": elapsed,
        "latencies_ms": latencies_ms,
    }


class RawHttp:
    """A lean HTTP/1.1 keep-alive client: one connection per concurrent caller.

    At concurrency 32 httpx spends more CPU per request than the servers measured here
    (its requests/s at 32 equal those at 1, whatever the route), so it would measure
    itself; this client writes a prepared request and reads a Content-Length response.
    """

    def __init__(self, target: str, request: bytes) -> None:
        self._host, port = target.removeprefix("http://").rsplit(":", 1)
        self._port = int(port)
        self._request = request
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    @classmethod
    def prepare(cls, args: argparse.Namespace) -> RawHttp:
        host = args.target.removeprefix("http://")
        lines = [
            f"{'POST' if args.body else 'GET'} {args.path} HTTP/1.1",
            f"Host: {host}",
            "Accept: */*",
        ]
        if args.credential:
            lines.append(f"Authorization: Bearer {args.credential}")
        if args.no_cache:
            lines.append("Cache-Control: no-cache")
        body = args.body.encode()
        if body:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return cls(args.target, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    async def open(self, connections: int) -> None:
        for _ in range(connections):
            self._idle.put_nowait(await asyncio.open_connection(self._host, self._port))

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer = self._idle.get_nowait()
            writer.close()

    async def call(self) -> None:
        reader, writer = await self._idle.get()
        writer.write(self._request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head[9:12]
        length = -1
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length < 0:
            raise SystemExit(f"no Content-Length in {head[:200]!r}")
        body = await reader.readexactly(length)
        if status != b"200":
            raise SystemExit(f"HTTP {status.decode()}: {body[:200]!r}")
        self._idle.put_nowait((reader, writer))


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    if args.kind == "raw-http":
        raw = RawHttp.prepare(args)
        await raw.open(args.concurrency)
        try:
            return await _measure(raw.call, args.concurrency, args.requests)
        finally:
            await raw.close()
    if args.kind == "grpc":
        import grpc

        from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc

        async with grpc.aio.insecure_channel(args.target) as channel:
            stub = llm_pb2_grpc.LLMRouterServiceStub(channel)

            async def grpc_call() -> None:
                await stub.ListModels(llm_pb2.ListModelsRequest(), timeout=10)

            return await _measure(grpc_call, args.concurrency, args.requests)
    headers = {"Authorization": f"Bearer {args.credential}"} if args.credential else {}
    if args.no_cache:
        headers["Cache-Control"] = "no-cache"
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(base_url=args.target, headers=headers, limits=limits) as client:
        body = json.loads(args.body) if args.body else None

        async def http_call() -> None:
            if body is None:
                response = await client.get(args.path)
            else:
                response = await client.post(args.path, json=body)
            if response.status_code != 200:
                raise SystemExit(f"{args.path}: HTTP {response.status_code} {response.text[:200]}")

        return await _measure(http_call, args.concurrency, args.requests)


async def _interleaved(args: argparse.Namespace) -> dict[str, Any]:
    """Concurrency 1 over (a), (b), (c) request by request, the order rotating each turn."""
    import grpc

    from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc

    async with (
        grpc.aio.insecure_channel(args.grpc) as channel,
        httpx.AsyncClient(base_url=args.bare) as bare,
        httpx.AsyncClient(
            base_url=args.target, headers={"Authorization": f"Bearer {args.credential}"}
        ) as gateway,
    ):
        stub = llm_pb2_grpc.LLMRouterServiceStub(channel)

        async def direct() -> None:
            await stub.ListModels(llm_pb2.ListModelsRequest(), timeout=10)

        async def http(client: httpx.AsyncClient) -> None:
            response = await client.get(args.path)
            if response.status_code != 200:
                raise SystemExit(f"{args.path}: HTTP {response.status_code} {response.text[:200]}")

        calls: list[Callable[[], Awaitable[None]]] = [
            direct,
            lambda: http(bare),
            lambda: http(gateway),
        ]
        for _ in range(min(50, args.requests // 10)):  # warm-up
            for call in calls:
                await call()
        latencies: list[list[float]] = [[], [], []]
        for turn in range(args.requests):
            for offset in range(3):
                path = (turn + offset) % 3
                start = time.perf_counter()
                await calls[path]()
                latencies[path].append((time.perf_counter() - start) * 1000)
    paths = [summary(ms, sum(ms) / 1000) for ms in latencies]
    a, b, c = latencies

    def paired(x: list[float], y: list[float]) -> float:
        return statistics.median(p - q for p, q in zip(x, y, strict=True))

    return {"paths": paths, "paired_c_b": paired(c, b), "paired_c_a": paired(c, a)}


def load_main(args: argparse.Namespace) -> None:
    run = _interleaved if args.kind == "interleaved" else _load
    print(json.dumps(asyncio.run(run(args))))


# ---------------------------------------------------------------- bare proxy (own process)


def bare_main(args: argparse.Namespace) -> None:
    import grpc
    import uvicorn
    from fastapi import FastAPI

    from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc

    app = FastAPI()
    state: dict[str, Any] = {}

    @app.on_event("startup")
    async def connect() -> None:
        state["stub"] = llm_pb2_grpc.LLMRouterServiceStub(grpc.aio.insecure_channel(args.router))

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        reply = await state["stub"].ListModels(llm_pb2.ListModelsRequest(), timeout=10)
        return {
            "object": "list",
            "data": [{"id": m.id, "object": "model"} for m in reply.models],
        }

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


# ---------------------------------------------------------------- orchestration


@contextmanager
def process(
    command: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    output = log.open("ab") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def gateway_env(common: dict[str, str], port: int, router_addr: str, prefix: str) -> dict[str, str]:
    """One gateway worker as benchmarked: API key, Redis rate limit (far from its limit),
    metrics and a JSON access line per request, in front of the router at ``router_addr``."""
    return {
        **common,
        "AIMESH_PORT": str(port),
        "AIMESH_HOST": "127.0.0.1",
        "AIMESH_WORKERS": "1",
        "AIMESH_ADMIN_API_KEY": ADMIN_KEY,
        "AIMESH_REDIS_URL": REDIS_URL,
        "AIMESH_REDIS_KEY_PREFIX": prefix,
        "AIMESH_RATE_LIMIT_RPM": "100000000",
        "LLM_ROUTER_SERVICE_ADDR": router_addr,
        "AIMESH_LOG_LEVEL": "INFO",  # the access log line is part of what is measured
        "AIMESH_LOG_FORMAT": "json",
    }


def user_key(gateway: str) -> str:
    """A new API key with the user role, made with the admin key."""
    created = httpx.post(
        f"{gateway}/v1/admin/keys",
        json={"roles": ["user"], "name": "bench"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    return str(created.raise_for_status().json()["key"])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up in {timeout} s")


def wait_grpc(addr: str, timeout: float = 60) -> None:
    host, port = addr.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, int(port))) == 0:
                time.sleep(0.5)
                return
        time.sleep(0.2)
    raise SystemExit(f"{addr} did not come up in {timeout} s")


def run_load(
    kind: str, target: str, concurrency: int, requests: int, **extra: str
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "scripts.bench.gateway",
        "load",
        "--kind",
        kind,
        "--target",
        target,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
    ]
    for name, value in extra.items():
        command += [f"--{name}", value]
    done = subprocess.run(command, cwd=ROOT, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"load client failed: {done.stdout[-500:]} {done.stderr[-2000:]}")
    output = done.stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def brief(result: dict[str, Any]) -> str:
    return f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, {result['rps']:.0f}/s"


@dataclass
class Row:
    name: str
    c1: dict[str, Any]
    c32: dict[str, Any]


def render(rows: list[Row], requests: int, paired: tuple[float, float]) -> str:
    """The table; ``paired`` is the median of the per-turn differences (c)-(b) and (c)-(a)."""
    a, b, c = rows[0], rows[1], rows[2]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on a 2-core VM (1-minute load average "
        f"{os.getloadavg()[0]:.1f} at the end, the benchmark's own processes included); "
        f"{requests} requests per cell, load client in its own process "
        "(grpc.aio for gRPC; for HTTP httpx at concurrency 1 and a lean asyncio HTTP/1.1 client "
        "at 32, where httpx measures its own CPU), keep-alive connections, "
        "llm-router `ListModels`. "
        "At concurrency 1 one client takes (a), (b), (c) in turn, one request each, the order "
        "rotating, so a drift of the machine's speed (CPU steal) weighs on the three alike; "
        f"at concurrency 32 the five paths take turns in {ROUNDS} rounds, pooled.",
        "",
        "| path | c=1 p50 ms | c=1 p99 ms | c=1 req/s | c=32 p50 ms | c=32 p99 ms | c=32 req/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.c1['p50_ms']:.2f} | {row.c1['p99_ms']:.2f} | {row.c1['rps']:.0f} "
            f"| {row.c32['p50_ms']:.2f} | {row.c32['p99_ms']:.2f} | {row.c32['rps']:.0f} |"
        )
    lines += [
        "",
        f"- (c) - (b), our middleware, c=1: p50 {c.c1['p50_ms'] - b.c1['p50_ms']:+.2f} ms "
        f"(target ≤ 1 ms); median of the per-turn differences {paired[0]:+.2f} ms",
        f"- (c) - (a), the whole gateway hop, c=1: p50 {c.c1['p50_ms'] - a.c1['p50_ms']:+.2f} ms "
        f"(target ≤ 3 ms), p99 {c.c1['p99_ms'] - a.c1['p99_ms']:+.2f} ms (target ≤ 10 ms); "
        f"median of the per-turn differences {paired[1]:+.2f} ms",
        f"- throughput ratio (c)/(b) at c=32: {c.c32['rps'] / b.c32['rps']:.2f}x; "
        f"cached route against the same request uncached (d)/(e): "
        f"{rows[3].c1['rps'] / rows[4].c1['rps']:.2f}x at c=1, "
        f"{rows[3].c32['rps'] / rows[4].c32['rps']:.2f}x at c=32",
    ]
    return "\n".join(lines)


def write_doc(section: str) -> None:
    write_section("gateway", "Gateway", section)


def bench_main(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="aimesh-bench-gateway-"))
    print(f"service logs in {data_dir}", flush=True)
    router_port, bare_port, gateway_port = free_port(), free_port(), free_port()
    router_addr = f"127.0.0.1:{router_port}"
    prefix = f"aimesh-bench-{uuid.uuid4().hex[:8]}:"
    common = {"AIMESH_DATA_DIR": str(data_dir), "AIMESH_LOG_LEVEL": "WARNING"}
    with (
        process(
            [str(BIN / "aimesh-llm-router")],
            {**common, "AIMESH_PORT": str(router_port)},
            data_dir / "llm-router.log",
        ),
        process(
            [
                sys.executable,
                "-m",
                "scripts.bench.gateway",
                "bare",
                "--port",
                str(bare_port),
                "--router",
                router_addr,
            ]
        ),
        process(
            [str(BIN / "aimesh-gateway")],
            gateway_env(common, gateway_port, router_addr, prefix),
            data_dir / "gateway.log",
        ),
    ):
        wait_grpc(router_addr)
        bare, gateway = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{gateway_port}"
        wait_http(f"{bare}/docs")
        wait_http(f"{gateway}/healthz")
        key = user_key(gateway)
        n = args.requests
        paths: list[tuple[str, str, str, dict[str, str]]] = [
            ("(a) direct gRPC", "grpc", router_addr, {}),
            ("(b) bare FastAPI proxy", "http", bare, {"path": "/v1/models"}),
            (
                "(c) gateway /v1/models (API key, Redis limit, metrics, log)",
                "http",
                gateway,
                {"path": "/v1/models", "credential": key},
            ),
        ]
        # Concurrency 1 interleaved request by request (a, b, c, then b, c, a, ...): the
        # machine's speed drifts (CPU steal) from one second to the next, and the targets are
        # differences between the paths.
        interleaved = run_load(
            "interleaved", gateway, 1, n, grpc=router_addr, bare=bare, credential=key
        )
        paired = (interleaved["paired_c_b"], interleaved["paired_c_a"])
        cached = cached_path(gateway, key)
        name, kind, target, extra = cached
        uncached = (
            "(e) the same chat completion, cache bypassed (Cache-Control: no-cache)",
            kind,
            target,
            {**extra, "no-cache": "1"},
        )
        c1s = [*interleaved["paths"]]
        for _, kind, target, extra in (cached, uncached):
            c1s.append(run_load(kind, target, 1, n, **extra))
        paths += [cached, uncached]
        c32s = run_rounds(paths, 32, n)
        rows = []
        for (name, _, _, _), c1, c32 in zip(paths, c1s, c32s, strict=True):
            rows.append(Row(name, c1, c32))
            print(f"{name}: c1 {brief(c1)}  c32 {brief(c32)}", flush=True)
    section = render(rows, n, paired)
    print(section)
    write_doc(section)


def cached_path(gateway: str, key: str) -> tuple[str, str, str, dict[str, str]]:
    """(d): a temperature-0 chat completion, answered from the Redis cache after the first."""
    body = json.dumps(
        {
            "model": "default",
            "temperature": 0,
            "messages": [{"role": "user", "content": "cache me"}],
        }
    )
    first = httpx.post(
        f"{gateway}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=60,
    )
    if first.status_code != 200:
        raise SystemExit(f"chat completion failed: {first.status_code} {first.text[:200]}")
    return (
        "(d) gateway cached chat completion (temperature 0, Redis)",
        "http",
        gateway,
        {"path": "/v1/chat/completions", "credential": key, "body": body},
    )


def run_rounds(
    paths: list[tuple[str, str, str, dict[str, str]]],
    concurrency: int,
    requests: int,
    rounds: int = ROUNDS,
) -> list[dict[str, Any]]:
    """Each path's ``requests`` in ``rounds`` rounds, the paths taking turns, pooled.

    One long run per path in turn lets a minute of CPU steal land on one path alone; short
    rounds spread it over all of them, so their ratios hold from one run to the next.
    """
    pooled: list[tuple[list[float], float]] = [([], 0.0) for _ in paths]
    for round_ in range(rounds):
        for offset in range(len(paths)):
            index = (round_ + offset) % len(paths)
            _, kind, target, extra = paths[index]
            kind = "raw-http" if kind == "http" else kind  # see RawHttp
            result = run_load(kind, target, concurrency, requests // rounds, **extra)
            latencies, elapsed = pooled[index]
            latencies += result["latencies_ms"]
            pooled[index] = (latencies, elapsed + result["elapsed"])
    return [summary(latencies, elapsed) for latencies, elapsed in pooled]


# ---------------------------------------------------------------- profile (one process)


async def _profile(requests: int, top: int, log_stream: TextIO) -> None:
    import cProfile
    import io
    import logging
    import pstats

    from aimesh_gateway.core.config import Settings as GatewaySettings
    from aimesh_gateway.main import _configure_logging, create_app
    from aimesh_llm_router.config import Settings as RouterSettings
    from aimesh_llm_router.server import build_dependencies, create_server

    data_dir = Path(tempfile.mkdtemp(prefix="aimesh-profile-gateway-"))
    router_settings = RouterSettings(
        port=0, host="127.0.0.1", metrics_port=None, data_dir=data_dir / "router"
    )
    router = create_server(router_settings, build_dependencies(router_settings))
    await router.start()
    settings = GatewaySettings(
        admin_api_key=ADMIN_KEY,
        llm_router_service_addr=f"127.0.0.1:{router.port}",
        data_dir=data_dir / "gateway",
        redis_url=REDIS_URL,
        redis_key_prefix=f"aimesh-profile-{uuid.uuid4().hex[:8]}:",
        rate_limit_rpm=100_000_000,
        log_level="INFO",  # the access log line is part of what we measure, as in the bench
        log_format="json",
    )
    _configure_logging(settings)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(log_stream)  # formatted and written, as in the bench
    app = create_app(settings)
    profiler = cProfile.Profile()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            created = await client.post(
                "/v1/admin/keys",
                json={"roles": ["user"], "name": "profile"},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
            client.headers["Authorization"] = f"Bearer {created.raise_for_status().json()['key']}"
            for _ in range(200):  # warm-up: caches filled, connections open
                (await client.get("/v1/models")).raise_for_status()
            started = time.perf_counter()
            profiler.enable()
            for _ in range(requests):
                await client.get("/v1/models")
            profiler.disable()
            elapsed = time.perf_counter() - started
    await router.stop(0)
    stats = pstats.Stats(profiler)
    # {(file, line, function): (primitive calls, calls, tottime, cumtime, callers)}
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]

    def calls_of(file_end: str, function: str) -> int:
        return sum(
            value[0]
            for (file, _, name), value in raw.items()
            if file.endswith(file_end) and name == function
        )

    per_request = elapsed / requests * 1000
    print(f"{requests} x GET /v1/models in process under cProfile: {per_request:.2f} ms each")
    print(f"function calls per request:         {sum(v[1] for v in raw.values()) / requests:.0f}")
    loop_turns = calls_of("base_events.py", "_run_once") / requests
    print(f"event-loop iterations per request:  {loop_turns:.1f}")
    print(
        "thread-pool hand-offs per request:  "
        f"{calls_of('to_thread.py', 'run_sync') / requests:.1f} (resumptions included)"
    )
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats("aimesh_", top)
    print(out.getvalue())


def profile_main(args: argparse.Namespace) -> None:
    with open(os.devnull, "w") as devnull:
        asyncio.run(_profile(args.requests, args.top, devnull))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode")
    bench = sub.add_parser("bench")
    bench.add_argument("--requests", type=int, default=2000)
    load = sub.add_parser("load")
    load.add_argument("--kind", choices=["grpc", "http", "raw-http", "interleaved"], required=True)
    load.add_argument("--target", required=True)
    load.add_argument("--concurrency", type=int, required=True)
    load.add_argument("--requests", type=int, required=True)
    load.add_argument("--path", default="/v1/models")
    load.add_argument("--credential", default="")
    load.add_argument("--body", default="")
    load.add_argument("--no-cache", default="", help="non-empty: send Cache-Control: no-cache")
    load.add_argument("--grpc", default="", help="interleaved: the router's address, for (a)")
    load.add_argument("--bare", default="", help="interleaved: the bare proxy's URL, for (b)")
    profile = sub.add_parser("profile")
    profile.add_argument("--requests", type=int, default=2000)
    profile.add_argument("--top", type=int, default=30)
    bare = sub.add_parser("bare")
    bare.add_argument("--port", type=int, required=True)
    bare.add_argument("--router", required=True)
    args = parser.parse_args(argv)
    if args.mode == "load":
        load_main(args)
    elif args.mode == "bare":
        bare_main(args)
    elif args.mode == "profile":
        profile_main(args)
    else:
        if args.mode is None:
            args = parser.parse_args(["bench", *(argv or sys.argv[1:])])
        bench_main(args)


if __name__ == "__main__":
    main()
