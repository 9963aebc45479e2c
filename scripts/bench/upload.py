"""Memory of a 50 MB upload (``make bench-upload``); writes its section of docs/benchmarks.md.

The whole mesh runs as in ``make run`` (four processes, embedded defaults), then again on a
real Milvus server (milvus-server, its own process) instead of Milvus Lite. One multipart
upload of a 50 MB JSON file (a list of documents of real sentences, each under the
retrieval service's per-document limit) goes to ``POST /v1/collections/{c}/files``; the job
then runs for ``--run-seconds``. Reported, from the kernel's own accounting
(``/proc/<pid>/status``: VmRSS now, VmHWM = the peak since the process started):

* the gateway's and the retrieval service's resident memory before the upload, their peak
  until the 202 and until the end of the run, and the difference (the cost of the 50 MB), beside the
  upload's size (the baseline of the ratio);
* the time to the 202, and the job's progress (chunks embedded of total) when stopped.

Embedding 50 MB (about 60,000 chunks) takes far longer than the run on 2 cores; memory is
the point: the job streams through embedding in bounded batches, so the peak should not
grow with the part already done (on Milvus Lite the retrieval process also holds the stored
collection, which does grow with it). The collection is deleted at the end, which fails the job.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from scripts.bench.doc import write_section
from scripts.bench.proc import tree_mib
from scripts.bench.retrieval import milvus_server
from scripts.bench.texts import bench_texts
from scripts.devmesh import Mesh, Ports

ROOT = Path(__file__).resolve().parents[2]
MB = 1_000_000  # decimal megabytes: 50 MB fits the gateway's 50 MiB per-file limit
DOCUMENT_CHARS = 900_000  # under the retrieval service's 1,000,000 per document


def make_upload(path: Path, size: int, seed: int = 3) -> tuple[int, int]:
    """A JSON list of documents of shuffled real sentences, ``size`` bytes or a little more."""
    rng = random.Random(seed)
    sentences = bench_texts(1000)
    documents: list[dict[str, str]] = []
    written = 2
    while written < size:
        parts: list[str] = []
        length = 0
        while length < DOCUMENT_CHARS:
            sentence = rng.choice(sentences)
            parts.append(sentence)
            length += len(sentence) + 1
        document = {"id": f"doc-{len(documents):04d}", "text": " ".join(parts)}
        documents.append(document)
        written += len(json.dumps(document)) + 2
    path.write_text(json.dumps(documents))
    return path.stat().st_size, len(documents)


def memory(mesh: Mesh, name: str, field: str) -> float:
    """MiB of ``field`` (VmRSS or VmHWM) summed over the service's process tree."""
    process = mesh.service(name).process
    assert process is not None
    return tree_mib(process.pid, field)


def render(runs: dict[str, dict[str, float]]) -> str:
    day = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    first = next(iter(runs.values()))
    rows = [
        f"Measured {day} on 2 cores (1-minute load average {os.getloadavg()[0]:.1f} at the "
        "end), `make run`'s four processes (SQLite job store), once on Milvus Lite (the "
        "embedded default, inside the retrieval process) and once on a Milvus server "
        "(milvus-server 2.3.5, its own process, not counted).",
        "",
        f"One upload of {first['upload_mb']:.1f} MB ({int(first['documents'])} documents in one "
        "JSON file), then the job runs; memory from the kernel's accounting (VmRSS before, "
        "VmHWM = the peak since start).",
        "",
        "| vector store | 202 after s | job ran s | chunks embedded | process | before MiB "
        "| peak until the 202 | peak until the end | peak - before | per MB uploaded |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for store, figures in runs.items():
        for name in ("gateway", "retrieval"):
            grown = figures[f"{name}_peak"] - figures[f"{name}_before"]
            rows.append(
                f"| {store} | {figures['accept_s']:.1f} | {figures['run_s']:.0f} | "
                f"{int(figures['done']):,} of {int(figures['total']):,} | {name} | "
                f"{figures[f'{name}_before']:.0f} | {figures[f'{name}_accept_peak']:.0f} | "
                f"{figures[f'{name}_peak']:.0f} | {grown:+.0f} | "
                f"{grown / figures['upload_mb']:.2f} |"
            )
    rows += [
        "",
        "`make bench-upload` (scripts/bench/upload.py). The gateway parses the whole upload "
        "before it answers (a bad file must reject the upload with nothing stored) and streams "
        "the documents to the retrieval service in messages of 16; the retrieval service counts "
        "their chunks, keeps them in its job store (one message in memory at a time) and embeds "
        "them in steps of 512 chunks. With Milvus Lite the retrieval process also holds the "
        "stored collection itself (Milvus Lite keeps it in memory), which grows with every "
        "chunk stored; on a server the retrieval process holds only the job's steps.",
    ]
    return "\n".join(rows)


def write_doc(section: str) -> None:
    write_section("upload", "Upload memory", section)


def measure(
    upload: Path, data: Path, run_seconds: float, milvus_uri: str | None
) -> dict[str, float]:
    """Upload ``upload`` to a fresh mesh, let the job run, return the figures."""
    figures: dict[str, float] = {}
    extra_env = {"AIMESH_MILVUS_URI": milvus_uri} if milvus_uri else None
    mesh = Mesh(data / "mesh", ports=Ports.free(), log_dir=data / "logs", extra_env=extra_env)
    with mesh:
        headers = {"Authorization": f"Bearer {mesh.admin_api_key}"}
        with httpx.Client(base_url=mesh.url, headers=headers, timeout=600) as client:
            created = client.post("/v1/collections", json={"name": "upload-bench"})
            created.raise_for_status()
            for name in ("gateway", "retrieval"):
                figures[f"{name}_before"] = memory(mesh, name, "VmRSS")
            started = time.perf_counter()
            with upload.open("rb") as body:
                accepted = client.post(
                    "/v1/collections/upload-bench/files",
                    files={"files": ("documents.json", body, "application/json")},
                )
            figures["accept_s"] = time.perf_counter() - started
            accepted.raise_for_status()
            for name in ("gateway", "retrieval"):
                figures[f"{name}_accept_peak"] = memory(mesh, name, "VmHWM")
            job_url = accepted.json()["status_url"]
            started = time.perf_counter()
            job: dict[str, object] = {}
            while time.perf_counter() - started < run_seconds:
                job = client.get(job_url).json()
                if job.get("state") in ("succeeded", "failed"):
                    break
                time.sleep(2)
            figures["run_s"] = time.perf_counter() - started
            progress = job.get("progress")
            assert isinstance(progress, dict), job
            figures["done"] = float(progress.get("chunks_embedded", 0))
            figures["total"] = float(progress.get("chunks_total", 0))
            for name in ("gateway", "retrieval"):
                figures[f"{name}_peak"] = memory(mesh, name, "VmHWM")
            client.delete("/v1/collections/upload-bench")
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="Size of the upload")
    parser.add_argument("--run-seconds", type=float, default=180.0)
    parser.add_argument("--no-write", action="store_true", help="Print only")
    args = parser.parse_args(argv)
    runs: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="aimesh-bench-upload-") as folder:
        data = Path(folder)
        upload = data / "documents.json"
        size, count = make_upload(upload, int(args.mb * MB))
        for store in ("Milvus Lite", "Milvus server"):
            where = data / store.replace(" ", "-")
            if store == "Milvus server":
                with milvus_server(where / "milvus") as uri:
                    figures = measure(upload, where, args.run_seconds, uri)
            else:
                figures = measure(upload, where, args.run_seconds, None)
            figures["upload_mb"], figures["documents"] = size / MB, count
            runs[store] = figures
            print(store, {k: round(v, 1) for k, v in figures.items()}, flush=True)
    section = render(runs)
    print(section)
    if not args.no_write:
        write_doc(section)


if __name__ == "__main__":
    main()
