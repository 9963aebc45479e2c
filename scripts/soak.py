"""A soak of the whole mesh (``make soak``): does memory stay flat and latency stay put?

The four services run as real processes on their embedded defaults, exactly as ``make run``
starts them (Milvus Lite, SQLite, in-process cache and limits, the extractive ``local``
provider; no model server, no Redis), on ports the OS picks, on 127.0.0.1 only. Then, for
``--seconds`` (default 2 hours, ``SOAK_SECONDS``), an open-loop load of ``--rate`` requests a
second (default 8, ``SOAK_RATE``; Poisson arrivals, so a slow answer does not slow the load):

* 40 % ``POST /v1/collections/{c}/search`` (queries drawn from a pool of real sentences),
* 20 % ``POST /v1/ask`` on the same collection,
* 20 % ``POST /v1/chat/completions`` (temperature 0, a distinct question each: cached, never hit),
* 20 % ``POST /v1/embeddings`` of a text never sent before (cached, never hit),

plus one document upsert every ``--upsert-every`` seconds (5). The collection starts with
``--documents`` documents (2,000) and each upsert rewrites one of them in turn with new
text, so it stays the same size while its rows are deleted, written, flushed and compacted
all along: a steady state in which any growth of memory or latency is the processes', not
the data's. ``--documents 0`` instead starts from 50 and adds a new document each time, so
the collection grows for the whole run (its fresh window then shows what the data costs).
The response cache is filled with entries that are never read again: the worst case for
its memory.

Every 10 s the resident memory (VmRSS) of each service's process tree is read from /proc;
every request's latency is kept per route. At the end it prints latency per minute and per
route, the memory slope of each service after the warm-up (least squares, MB per hour, and
as a share of its size), the p50 and p95 of the first and the last window, the errors, and
a verdict against the issue-28 criteria: growth after warm-up at most 5 % per hour per
service, p50 drift at most 10 %, no error. The exit status is 0 on pass, 1 on fail, 2 when
the mesh did not start, 130 when interrupted (Ctrl-C stops the load, reports what ran and
stops every service).

Short runs scale their windows: the warm-up is the cache's lifetime plus a minute (the
cache is then full: entries expire as fast as they come) or a tenth of the run, whichever is
longer, at most half the run; the first and last windows are 10 minutes or a fifth of the
run; a run shorter than 30 minutes gives the cache a lifetime of a tenth of the run (at
least 30 s) so that it fills within the warm-up (``--cache-ttl`` overrides it).

Then, unless ``--fresh 0``, every service is restarted on the same data and the same mix
(without upserts) runs for ``--fresh`` seconds (5 minutes, or the window of a short run):
the *fresh* window. Where the p50 drifted, it says whose the drift is: a fresh process on
the same data as slow as the last window means the data (a larger collection) or the
machine; as fast as the first window means the processes themselves (issue 28 §2).

``--profile SECONDS`` records the gateway and the retrieval service with py-spy (pip
``py-spy``) for that long, once just after the warm-up and once before the end, into
``--out``: the two flame graphs show what grew.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aimesh_common.stats import percentile
from scripts.bench.proc import (
    command_name,
    machine_busy_seconds,
    tree,
    tree_cpu_seconds,
    tree_mib,
)
from scripts.bench.texts import bench_texts
from scripts.devmesh import Mesh, MeshStartError, Ports

SERVICES = ("gateway", "embedding", "retrieval", "llm-router")
MIX = (("search", 0.4), ("ask", 0.2), ("chat", 0.2), ("embeddings", 0.2))
COLLECTION = "soak"
REQUEST_TIMEOUT = 30.0
# The issue-28 criteria.
MAX_GROWTH_PCT_PER_HOUR = 5.0
MAX_P50_DRIFT_PCT = 10.0


@dataclass
class Plan:
    """What one soak does; every figure derived from the duration is fixed here, up front."""

    seconds: float
    rate: float
    warmup: float
    window: float
    cache_ttl: float
    sample_every: float = 10.0
    upsert_every: float = 5.0
    # Documents in the collection, each upsert rewriting one (0: every upsert adds one).
    documents: int = 2000
    max_in_flight: int = 256
    seed: int = 28
    profile_seconds: float = 0.0
    max_growth_pct_per_hour: float = MAX_GROWTH_PCT_PER_HOUR
    max_p50_drift_pct: float = MAX_P50_DRIFT_PCT
    fresh_seconds: float = 0.0


def plan_for(
    seconds: float,
    rate: float,
    *,
    warmup: float | None = None,
    window: float | None = None,
    cache_ttl: float | None = None,
    **more: Any,
) -> Plan:
    """The plan of a run of ``seconds`` at ``rate``, windows scaled down for short runs."""
    if seconds <= 0 or rate <= 0:
        raise ValueError("seconds and rate must be positive")
    if cache_ttl is None:
        cache_ttl = 300.0 if seconds >= 1800 else max(30.0, seconds / 10)
    if warmup is None:
        warmup = min(max(cache_ttl + 60.0, seconds / 10), seconds / 2)
    if window is None:
        window = min(600.0, seconds / 5)
    if more.get("fresh_seconds") is None:
        more["fresh_seconds"] = min(300.0, window)
    return Plan(seconds, rate, warmup, window, cache_ttl, **more)


@dataclass
class Record:
    """One request: when it started (s since the load began), its route, latency and outcome."""

    at: float
    route: str
    seconds: float
    ok: bool


@dataclass
class Samples:
    """Resident memory per service over time (MiB of the process tree), and CPU time used
    so far (s, of each service's tree and of the whole machine's cores)."""

    at: list[float] = field(default_factory=list)
    mib: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # The same resident memory split as the kernel counts it: anonymous pages (the heap,
    # arenas, thread stacks: what the process owns) and file-backed pages (shared
    # libraries and mapped data files, which the kernel can drop and read again).
    anon_mib: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    file_mib: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cpu: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    machine: list[float] = field(default_factory=list)
    children: dict[str, list[str]] = field(default_factory=dict)


class Traffic:
    """The request mix: deterministic for a seed, every embedding and chat text new."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        texts = bench_texts(1200, seed=seed, long_share=0.0)
        self.documents = texts[:400]
        self.queries = texts[400:600]
        self.fresh = texts[600:]
        self.count = 0
        self.embedding_model = "all-MiniLM-L6-v2"  # replaced by the one GET /v1/models names

    def route(self) -> str:
        pick = self.rng.random()
        for name, share in MIX:
            if pick < share:
                return name
            pick -= share
        return MIX[-1][0]

    def _new_text(self) -> str:
        self.count += 1
        return f"{self.rng.choice(self.fresh)} (soak {self.count})"

    def request(self, route: str) -> tuple[str, dict[str, Any]]:
        if route == "search":
            return f"/v1/collections/{COLLECTION}/search", {
                "query": self.rng.choice(self.queries),
                "top_k": 5,
            }
        if route == "ask":
            return "/v1/ask", {"question": self.rng.choice(self.queries), "collection": COLLECTION}
        if route == "chat":
            return "/v1/chat/completions", {
                "model": "default",
                "temperature": 0,
                "messages": [{"role": "user", "content": self._new_text()}],
            }
        return "/v1/embeddings", {"model": self.embedding_model, "input": self._new_text()}

    def document(self, index: int, pool: int = 0) -> dict[str, Any]:
        """The ``index``-th upsert: document ``index % pool`` (``pool`` 0: a new one each
        time) with text of its own, so that a rewrite really changes the document."""
        picks = random.Random(index)
        sentences = [picks.choice(self.documents) for _ in range(3)]
        number = index % pool if pool else index
        return {
            "id": f"soak-{number:06d}",
            "text": " ".join(sentences) + f" (version {index})",
            "metadata": {"n": index},
        }


class Soak:
    """Runs the load against a started mesh; ``stop`` (an event) ends it early."""

    def __init__(self, plan: Plan, mesh: Mesh, out: Path | None) -> None:
        self.plan = plan
        self.mesh = mesh
        self.out = out
        self.records: list[Record] = []
        self.samples = Samples()
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.in_flight = 0
        self.started = 0.0
        self.elapsed = 0.0
        self.profiles: list[str] = []
        self.traffic = Traffic(plan.seed)
        # The fresh window: the same mix against restarted services on the same data.
        self.fresh_records: list[Record] = []

    def _error(self, message: str) -> None:
        if len(self.errors) < 50:
            self.errors.append(message)

    async def _call(
        self, client: httpx.AsyncClient, route: str, path: str, body: dict[str, Any]
    ) -> None:
        at = time.monotonic() - self.started
        begun = time.perf_counter()
        ok = False
        try:
            response = await client.post(path, json=body)
            ok = response.status_code < 400
            if not ok:
                self._error(f"{at:.0f}s {route}: {response.status_code} {response.text[:200]}")
        except httpx.HTTPError as error:
            self._error(f"{at:.0f}s {route}: {type(error).__name__} {error}")
        finally:
            self.in_flight -= 1
        self.records.append(Record(at, route, time.perf_counter() - begun, ok))

    async def _launch(
        self,
        client: httpx.AsyncClient,
        tasks: set[asyncio.Task[None]],
        route: str,
        path: str,
        body: dict[str, Any],
    ) -> None:
        if self.in_flight >= self.plan.max_in_flight:
            # The mesh cannot keep up: counted as an error, not queued without end.
            at = time.monotonic() - self.started
            self._error(f"{at:.0f}s {route}: {self.in_flight} requests in flight, not sent")
            self.records.append(Record(at, route, 0.0, False))
            return
        self.in_flight += 1
        task = asyncio.create_task(self._call(client, route, path, body))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _requests(
        self, client: httpx.AsyncClient, traffic: Traffic, seconds: float | None = None
    ) -> None:
        tasks: set[asyncio.Task[None]] = set()
        arrivals = random.Random(self.plan.seed + 1)
        due = time.monotonic()
        end = self.started + (self.plan.seconds if seconds is None else seconds)
        while not self.stop.is_set():
            due += arrivals.expovariate(self.plan.rate)
            if due >= end:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self.stop.is_set():
                break
            route = traffic.route()
            path, body = traffic.request(route)
            await self._launch(client, tasks, route, path, body)
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 5)

    async def _upserts(self, client: httpx.AsyncClient, traffic: Traffic, first: int) -> None:
        index = first
        end = self.started + self.plan.seconds
        while not self.stop.is_set():
            due = self.started + (index - first + 1) * self.plan.upsert_every
            if due >= end or time.monotonic() >= end:  # a slow upsert does not overrun
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self.stop.is_set():
                return
            body = {"documents": [traffic.document(index, self.plan.documents)]}
            self.in_flight += 1
            await self._call(client, "upsert", f"/v1/collections/{COLLECTION}/documents", body)
            index += 1

    def _sample(self) -> None:
        self.samples.at.append(time.monotonic() - self.started)
        self.samples.machine.append(machine_busy_seconds())
        for name in SERVICES:
            process = self.mesh.service(name).process
            assert process is not None
            self.samples.mib[name].append(tree_mib(process.pid))
            self.samples.anon_mib[name].append(tree_mib(process.pid, "RssAnon"))
            self.samples.file_mib[name].append(tree_mib(process.pid, "RssFile"))
            self.samples.cpu[name].append(tree_cpu_seconds(process.pid))
            kids = [command_name(pid) for pid in tree(process.pid)[1:]]
            if kids:
                self.samples.children[name] = sorted(set(kids))

    async def _sampler(self) -> None:
        end = self.started + self.plan.seconds
        while not self.stop.is_set() and time.monotonic() < end:
            self._sample()
            await asyncio.sleep(min(self.plan.sample_every, max(0.0, end - time.monotonic())))
        self._sample()

    async def _profiler(self) -> None:
        """py-spy the gateway and retrieval just after the warm-up and before the end."""
        spy = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        if spy is None or self.out is None:
            print("--profile: py-spy not found or no --out; not profiling", file=sys.stderr)
            return
        length = self.plan.profile_seconds
        for label, at in (
            ("early", self.plan.warmup),
            ("late", self.plan.seconds - length - 5),
        ):
            # Waits on the stop event (in a thread), so that Ctrl-C is not kept waiting.
            delay = max(0.0, self.started + at - time.monotonic())
            if await asyncio.to_thread(self.stop.wait, delay):
                return
            runs = []
            for name in ("gateway", "retrieval"):
                process = self.mesh.service(name).process
                assert process is not None
                target = self.out / f"profile-{name}-{label}.txt"
                runs.append(
                    await asyncio.create_subprocess_exec(
                        spy,
                        "record",
                        "--pid",
                        str(process.pid),
                        "--duration",
                        str(int(length)),
                        "--rate",
                        "50",
                        "--format",
                        "raw",
                        "--output",
                        str(target),
                        "--nonblocking",
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                self.profiles.append(str(target))
            for run in runs:
                await run.wait()

    def _client(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.mesh.admin_api_key}"}
        assert self.mesh.url.startswith("http://127.0.0.1:"), self.mesh.url
        limits = httpx.Limits(max_connections=self.plan.max_in_flight, max_keepalive_connections=64)
        return httpx.AsyncClient(
            base_url=self.mesh.url,
            headers=headers,
            timeout=REQUEST_TIMEOUT,
            limits=limits,
            trust_env=False,  # never through a proxy: only 127.0.0.1
        )

    async def fresh(self) -> None:
        """The same mix, no upserts, for ``fresh_seconds`` against services restarted on the
        same data (the caller restarts them); its records go to ``fresh_records``."""
        records, self.records = self.records, self.fresh_records
        try:
            async with self._client() as client:
                await self._warm(client, self.traffic)
                self.started = time.monotonic()
                await self._requests(client, self.traffic, self.plan.fresh_seconds)
        finally:
            self.records = records

    async def run(self) -> None:
        traffic = self.traffic
        async with self._client() as client:
            seeded = await self._seed(client, traffic)
            self.started = time.monotonic()
            jobs = [
                self._requests(client, traffic),
                self._upserts(client, traffic, seeded),
                self._sampler(),
            ]
            if self.plan.profile_seconds > 0:
                jobs.append(self._profiler())
            await asyncio.gather(*jobs)
            self.elapsed = time.monotonic() - self.started

    async def _seed(self, client: httpx.AsyncClient, traffic: Traffic) -> int:
        """The collection with its documents, and one of each request so nothing is cold."""
        created = await client.post("/v1/collections", json={"name": COLLECTION})
        if created.status_code not in (200, 201, 409):
            raise MeshStartError(f"creating the collection: {created.status_code} {created.text}")
        models = await client.get("/v1/models")
        models.raise_for_status()
        for card in models.json()["data"]:
            if str(card.get("description", "")).startswith("Embedding model"):
                traffic.embedding_model = card["id"]
        count = self.plan.documents or 50
        for start in range(0, count, 100):
            pool = self.plan.documents
            documents = [traffic.document(i, pool) for i in range(start, min(count, start + 100))]
            stored = await client.post(
                f"/v1/collections/{COLLECTION}/documents", json={"documents": documents}
            )
            if stored.status_code >= 400:
                raise MeshStartError(f"seeding: {stored.status_code} {stored.text[:300]}")
        await self._warm(client, traffic)
        return count

    async def _warm(self, client: httpx.AsyncClient, traffic: Traffic) -> None:
        """One request of each kind, untimed, so that nothing is cold."""
        for route, _ in MIX:
            path, body = traffic.request(route)
            warm = await client.post(path, json=body)
            if warm.status_code >= 400:
                raise MeshStartError(f"first {route}: {warm.status_code} {warm.text[:300]}")


def slope_per_hour(at: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """Least-squares line through (seconds, MiB): (MiB per hour, fitted MiB at the first point)."""
    n = len(at)
    if n < 2:
        return 0.0, values[0] if values else 0.0
    mean_t, mean_v = sum(at) / n, sum(values) / n
    var = sum((t - mean_t) ** 2 for t in at)
    if var == 0:
        return 0.0, mean_v
    per_second = sum((t - mean_t) * (v - mean_v) for t, v in zip(at, values, strict=True)) / var
    return per_second * 3600, mean_v + per_second * (at[0] - mean_t)


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "p50_ms": math.nan, "p95_ms": math.nan}
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50) * 1000,
        "p95_ms": percentile(values, 95) * 1000,
    }


def attribute(first_ms: float, last_ms: float, fresh_ms: float, limit_pct: float) -> str:
    """Whose drift it is, from the p50 of the first, the last and the fresh window."""
    if not all(x > 0 for x in (first_ms, last_ms, fresh_ms)):
        return "not measured"
    if (last_ms - first_ms) / first_ms * 100 <= limit_pct:
        return "no drift"
    if abs(fresh_ms - last_ms) / last_ms * 100 <= limit_pct:
        return "the data or the machine: restarted processes on the same data are as slow"
    if abs(fresh_ms - first_ms) / first_ms * 100 <= limit_pct:
        return "the processes: restarted on the same data, they are as fast as at the start"
    if first_ms < fresh_ms < last_ms:
        share = (last_ms - fresh_ms) / (last_ms - first_ms) * 100
        return f"partly the processes: a restart took back {share:.0f} % of the drift"
    return "unclear: the fresh window is outside the first and the last"


def cpu_percent(at: list[float], used: list[float], start: float, end: float) -> float:
    """CPU used from ``start`` to ``end`` as a percentage of one core (a busy 2-core
    machine shows 200), over the samples that bracket the span (the last at or before
    ``start``, the first at or after ``end``)."""
    count = min(len(at), len(used))
    if count < 2:
        return math.nan
    first = max((i for i in range(count) if at[i] <= start), default=0)
    last = min((i for i in range(count) if at[i] >= end), default=count - 1)
    if at[last] <= at[first]:
        return math.nan
    return (used[last] - used[first]) / (at[last] - at[first]) * 100


def cpu_table(samples: Samples, start: float, end: float) -> dict[str, float]:
    """CPU % of one core per service and for the whole machine (``machine``: every process,
    the load generator and anything else running included) between two times."""
    table = {
        name: cpu_percent(samples.at, samples.cpu[name], start, end)
        for name in SERVICES
        if samples.cpu.get(name)
    }
    if samples.machine:
        table["machine"] = cpu_percent(samples.at, samples.machine, start, end)
    return table


def analyse(
    plan: Plan,
    records: list[Record],
    samples: Samples,
    elapsed: float,
    fresh: list[Record] | None = None,
) -> dict[str, Any]:
    """Every figure of the report and the verdict, as plain data (also the JSON result)."""
    routes = [name for name, _ in MIX] + ["upsert"]
    ok = [r for r in records if r.ok]
    errors = sum(1 for r in records if not r.ok)
    # Latency per minute and route.
    minutes: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in ok:
        minutes[int(r.at // 60)][r.route].append(r.seconds)
        if r.route != "upsert":
            minutes[int(r.at // 60)]["all"].append(r.seconds)
    per_minute = [
        {
            "minute": minute,
            "errors": sum(1 for r in records if not r.ok and int(r.at // 60) == minute),
            **{route: _quantiles(values) for route, values in sorted(minutes[minute].items())},
            "cpu_pct": cpu_table(samples, minute * 60.0, minute * 60.0 + 60.0),
        }
        for minute in sorted(minutes)
    ]
    # First and last window (the mix without upserts, which are one every 5 s).
    end = min(elapsed, plan.seconds)
    window = min(plan.window, end / 2) if end > 0 else plan.window
    first = [r for r in ok if r.at < window]
    last = [r for r in ok if r.at >= end - window]
    windows: dict[str, dict[str, dict[str, float]]] = {}
    for label, chosen in (("first", first), ("last", last)):
        windows[label] = {
            route: _quantiles([r.seconds for r in chosen if r.route == route]) for route in routes
        }
        windows[label]["all"] = _quantiles([r.seconds for r in chosen if r.route != "upsert"])
    # Where the time went: CPU per service in each window, and per request of the mix.
    cpu: dict[str, dict[str, float]] = {}
    for label, start, stop, chosen in (
        ("first", 0.0, window, first),
        ("last", end - window, end, last),
    ):
        table = cpu_table(samples, start, stop)
        served = sum(1 for r in chosen if r.route != "upsert")
        cpu[label] = table
        cpu[f"{label}_ms_per_request"] = {
            name: pct / 100 * (stop - start) / served * 1000 if served else math.nan
            for name, pct in table.items()
        }
    if fresh:
        fresh_ok = [r for r in fresh if r.ok]
        windows["fresh"] = {
            route: _quantiles([r.seconds for r in fresh_ok if r.route == route]) for route in routes
        }
        windows["fresh"]["all"] = _quantiles([r.seconds for r in fresh_ok])
    p50_first, p50_last = windows["first"]["all"]["p50_ms"], windows["last"]["all"]["p50_ms"]
    drift = (p50_last - p50_first) / p50_first * 100 if p50_first > 0 else math.nan
    drift_owner = (
        attribute(p50_first, p50_last, windows["fresh"]["all"]["p50_ms"], plan.max_p50_drift_pct)
        if fresh
        else "not measured"
    )
    # Memory after the warm-up.
    memory: dict[str, dict[str, float]] = {}
    after = [i for i, t in enumerate(samples.at) if t >= plan.warmup]
    for name in SERVICES:
        values = samples.mib.get(name, [])
        if not values:
            continue
        xs = [samples.at[i] for i in after]
        ys = [values[i] for i in after]
        slope, start = slope_per_hour(xs, ys)
        memory[name] = {
            "start_mib": values[0],
            "warm_mib": ys[0] if ys else math.nan,
            "end_mib": values[-1],
            "peak_mib": max(values),
            "slope_mib_per_hour": slope,
            "growth_pct_per_hour": slope / start * 100 if start > 0 else math.nan,
            "fit_points": len(xs),
        }
    checks = {
        "memory": all(
            m["fit_points"] >= 2 and m["growth_pct_per_hour"] <= plan.max_growth_pct_per_hour
            for m in memory.values()
        ),
        "p50_drift": not math.isnan(drift) and drift <= plan.max_p50_drift_pct,
        # A request the restarted mesh failed is an error of the run too.
        "errors": errors == 0 and len(records) > 0 and not any(not r.ok for r in fresh or []),
    }
    return {
        "plan": asdict(plan),
        "elapsed_seconds": elapsed,
        "requests": len(records),
        "errors": errors,
        "achieved_rate": (
            sum(1 for r in records if r.route != "upsert") / min(elapsed, plan.seconds)
            if elapsed
            else 0.0
        ),
        "load_average": os.getloadavg(),
        "memory": memory,
        "memory_samples": {
            "at": samples.at,
            "mib": dict(samples.mib),
            "anon_mib": dict(samples.anon_mib),
            "file_mib": dict(samples.file_mib),
        },
        "cpu_samples": {"seconds": dict(samples.cpu), "machine": samples.machine},
        "children": samples.children,
        "windows": windows,
        "cpu": cpu,
        "p50_drift_pct": drift,
        "drift_owner": drift_owner,
        "fresh_requests": len(fresh or []),
        "fresh_errors": sum(1 for r in fresh or [] if not r.ok),
        "per_minute": per_minute,
        "checks": checks,
        "passed": all(checks.values()),
    }


def render(result: dict[str, Any]) -> str:
    """The report a person reads."""
    plan = result["plan"]
    lines = [
        f"soak: {result['elapsed_seconds']:.0f} s at {plan['rate']:g} req/s "
        f"(achieved {result['achieved_rate']:.2f}), {result['requests']} requests, "
        f"{result['errors']} errors; warm-up {plan['warmup']:.0f} s, windows "
        f"{plan['window']:.0f} s, cache TTL {plan['cache_ttl']:.0f} s; load average "
        + " ".join(f"{x:.2f}" for x in result["load_average"]),
        "",
        "latency per minute, p50 ms (n):",
        f"{'min':>4} {'all':>14} "
        + " ".join(f"{route:>13}" for route in ("search", "ask", "chat", "embeddings", "upsert"))
        + "  errors  cpu % (gw emb ret rtr machine)",
    ]
    for row in result["per_minute"]:

        def cell(route: str, row: dict[str, Any] = row) -> str:
            figures = row.get(route)
            if not figures:
                return f"{'-':>13}"
            return f"{figures['p50_ms']:7.1f} ({figures['count']:3d})"

        used = row.get("cpu_pct", {})
        lines.append(
            f"{row['minute']:>4} {cell('all'):>14} "
            + " ".join(cell(r) for r in ("search", "ask", "chat", "embeddings", "upsert"))
            + f"  {row['errors']:>6}  "
            + " ".join(f"{used.get(name, math.nan):3.0f}" for name in (*SERVICES, "machine"))
        )
    lines += [
        "",
        "first and last window, ms:",
        f"{'route':<11} {'first p50/p95':>17} {'last p50/p95':>17}"
        + (f" {'fresh p50/p95':>17}" if "fresh" in result["windows"] else ""),
    ]
    for route in ("all", "search", "ask", "chat", "embeddings", "upsert"):
        cells = [
            f"{w[route]['p50_ms']:8.1f}/{w[route]['p95_ms']:8.1f}"
            for label in ("first", "last", "fresh")
            if (w := result["windows"].get(label)) is not None
        ]
        lines.append(f"{route:<11} " + " ".join(cells))
    cpu = result.get("cpu", {})
    if cpu.get("first"):
        lines += ["", "CPU, % of one core (ms per request of the mix), first -> last window:"]
        for name in (*SERVICES, "machine"):
            figures = [
                f"{cpu[label].get(name, math.nan):5.1f} "
                f"({cpu[label + '_ms_per_request'].get(name, math.nan):5.1f})"
                for label in ("first", "last")
            ]
            lines.append(f"  {name:<11} " + " -> ".join(figures))
    lines += [
        f"p50 drift: {result['p50_drift_pct']:+.1f} % (limit {plan['max_p50_drift_pct']:g} %); "
        f"whose: {result['drift_owner']}"
        + (
            f" (fresh window: {result['fresh_requests']} requests, "
            f"{result['fresh_errors']} errors, after restarting every service)"
            if result["fresh_requests"]
            else ""
        ),
        "",
        "memory (RSS of each service's process tree, MiB; slope after the warm-up):",
    ]
    for name, m in result["memory"].items():
        kids = result["children"].get(name)
        lines.append(
            f"  {name:<11} start {m['start_mib']:6.1f}  warm {m['warm_mib']:6.1f}  "
            f"end {m['end_mib']:6.1f}  peak {m['peak_mib']:6.1f}  "
            f"slope {m['slope_mib_per_hour']:+7.1f} MiB/h = {m['growth_pct_per_hour']:+6.1f} %/h"
            + (f"  (with {', '.join(kids)})" if kids else "")
        )
    checks = result["checks"]
    lines += [
        "",
        "checks: "
        + ", ".join(f"{name} {'ok' if passed else 'FAIL'}" for name, passed in checks.items())
        + f" (growth <= {plan['max_growth_pct_per_hour']:g} %/h per service, p50 drift <= "
        f"{plan['max_p50_drift_pct']:g} %, 0 errors)",
        f"soak {'PASSED' if result['passed'] else 'FAILED'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(env.get("SOAK_SECONDS", 7200)),
        help="How long the load runs (SOAK_SECONDS; default 7200)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=float(env.get("SOAK_RATE", 8)),
        help="Requests a second, upserts aside (SOAK_RATE; default 8)",
    )
    parser.add_argument("--warmup", type=float, help="Seconds before the memory fit starts")
    parser.add_argument("--window", type=float, help="Length of the first and last window, s")
    parser.add_argument("--cache-ttl", type=float, help="AIMESH_CACHE_TTL_SECONDS of the gateway")
    parser.add_argument("--upsert-every", type=float, default=5.0)
    parser.add_argument(
        "--documents",
        type=int,
        default=2000,
        help="Documents in the collection, each upsert rewriting one in turn (default 2000; "
        "0: start from 50 and add one with every upsert)",
    )
    parser.add_argument("--sample-every", type=float, default=10.0)
    parser.add_argument(
        "--max-growth",
        type=float,
        default=MAX_GROWTH_PCT_PER_HOUR,
        help="Growth limit per service after the warm-up, %% per hour",
    )
    parser.add_argument(
        "--max-drift",
        type=float,
        default=MAX_P50_DRIFT_PCT,
        help="p50 drift limit, first to last window, %%",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="py-spy the gateway and retrieval this long, early and late",
    )
    parser.add_argument(
        "--fresh",
        type=float,
        metavar="SECONDS",
        help="After the load, restart every service on the same data and run the mix this "
        "long (default: 300, or the window of a short run; 0: no fresh window)",
    )
    parser.add_argument("--json", type=Path, help="Write the result (all figures) here")
    parser.add_argument("--out", type=Path, help="Keep the services' logs and profiles here")
    parser.add_argument("--seed", type=int, default=28)
    args = parser.parse_args(argv)
    plan = plan_for(
        args.seconds,
        args.rate,
        warmup=args.warmup,
        window=args.window,
        cache_ttl=args.cache_ttl,
        sample_every=args.sample_every,
        upsert_every=args.upsert_every,
        documents=args.documents,
        seed=args.seed,
        profile_seconds=args.profile,
        max_growth_pct_per_hour=args.max_growth,
        max_p50_drift_pct=args.max_drift,
        fresh_seconds=args.fresh,
    )
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aimesh-soak-")))
        out = args.out.resolve() if args.out else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        mesh = Mesh(
            scratch / "data",
            ports=Ports.free(),
            log_dir=(out or scratch) / "logs",
            extra_env={
                "AIMESH_CACHE_TTL_SECONDS": f"{plan.cache_ttl:g}",
                "AIMESH_REDIS_URL": None,
                "AIMESH_MILVUS_URI": None,
                "AIMESH_DATABASE_URL": None,
                "OPENAI_API_KEY": None,
                "AIMESH_MODELS_FILE": None,
                "AIMESH_LLM_LOCAL_MODEL_URL": None,
            },
        )
        soak = Soak(plan, mesh, out)
        interrupted = threading.Event()
        loading = threading.Event()

        def on_signal(*_: object) -> None:
            # The first Ctrl-C during the load ends it and reports; before the load, or a
            # second one, stops at once (every service is stopped on the way out).
            if interrupted.is_set() or not loading.is_set():
                interrupted.set()
                raise KeyboardInterrupt
            interrupted.set()
            soak.stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        print(
            f"soak: starting the mesh; then {plan.seconds:.0f} s at {plan.rate:g} req/s "
            f"(warm-up {plan.warmup:.0f} s, windows {plan.window:.0f} s, "
            f"cache TTL {plan.cache_ttl:.0f} s)",
            flush=True,
        )
        try:
            mesh.start()
            loading.set()
            asyncio.run(soak.run())
            if plan.fresh_seconds > 0 and not interrupted.is_set():
                print(
                    f"soak: restarting every service on the same data for a "
                    f"{plan.fresh_seconds:.0f} s fresh window",
                    flush=True,
                )
                mesh.stop()
                mesh.start()
                asyncio.run(soak.fresh())
        except MeshStartError as error:
            print(
                f"soak: the mesh did not start or the load could not begin: {error}",
                file=sys.stderr,
            )
            return 2
        except KeyboardInterrupt:
            print("soak: interrupted; services stopped", file=sys.stderr)
            return 130
        finally:
            mesh.stop()
        result = analyse(plan, soak.records, soak.samples, soak.elapsed, soak.fresh_records)
        result["errors_seen"] = soak.errors
        result["profiles"] = soak.profiles
        result["interrupted"] = interrupted.is_set()
        print(render(result), flush=True)
        if soak.errors:
            print("first errors:\n  " + "\n  ".join(soak.errors[:10]), flush=True)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=str))
        if interrupted.is_set():
            return 130
        return 0 if result["passed"] else 1
    return 2  # pragma: no cover - the ExitStack does not swallow exceptions


if __name__ == "__main__":
    raise SystemExit(main())
