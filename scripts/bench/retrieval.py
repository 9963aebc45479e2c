"""Retrieval benchmark (``make bench-retrieval``); writes its section of docs/benchmarks.md.

In one run, with every server in its own process (a real ``milvus-server`` 2.3.5, the
embedding service, the retrieval service) and this script as the load client:

1. Ingest throughput: an ingestion job (what an upload starts) of real sentences
   (scripts/bench/texts.py) through the retrieval service into the Milvus server, in
   chunks/s end to end (submit to SUCCEEDED), and synchronous UpsertDocuments calls, beside the
   embedding service's own throughput on the same chunk texts with the same batch size and
   concurrency as the retrieval service uses (the baseline; target ratio >= 0.80).
2. At 100,000 chunks on the Milvus server (HNSW, M=16, efConstruction=200, the service's
   schema): recall@10 of HNSW search as the service runs it (ef = max(128, k)) against exact
   search (numpy brute force over all vectors); target >= 0.95. Embedding 100k real chunks
   takes ~15 minutes on 2 cores, so the vectors are drawn from a Gaussian with the mean and
   covariance of the real embeddings of the ingested texts, and the queries are real
   embeddings of other sentences; a second, hard collection (isotropic clusters) is
   measured beside it.
3. Search latency p50/p99 of Search through the retrieval service beside a direct pymilvus
   search of the same collection with the same parameters, and beside the embedding call
   the service makes for the query; overhead = service - direct - embedding (target: p50
   overhead <= 3 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
from pymilvus import MilvusClient

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from aimesh_retrieval.config import Settings
from aimesh_retrieval.store import CollectionRef, IndexConfig, MilvusStore
from scripts.bench.doc import write_section
from scripts.bench.stats import percentile
from scripts.bench.texts import bench_texts
from scripts.devmesh import free_port
from scripts.milvus_server import MilvusServerFailed, MilvusServerMissing, run_milvus_server

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DIM = 384
TENANT = "bench"
SEARCH_EF = Settings().hnsw_search_ef  # what the service searches with


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


@contextlib.contextmanager
def service(command: str, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / command)],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("AIMESH_")},
            "AIMESH_HOST": "127.0.0.1",
            "AIMESH_PORT": str(port),
            "AIMESH_METRICS_PORT": "0",
            "AIMESH_LOG_LEVEL": "WARNING",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    addr = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _serving(addr):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{command} did not start")
            time.sleep(0.2)
        yield addr
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def milvus_server(data: Path) -> Iterator[str]:
    """milvus-server on free ports (scripts/milvus_server.py), stopped on exit."""
    try:
        with run_milvus_server(data, timeout=180) as server:
            yield server.uri
    except (MilvusServerMissing, MilvusServerFailed) as error:
        raise SystemExit(f"milvus-server: {error}") from None


async def embedding_throughput(
    addr: str, texts: list[str], batch: int, concurrency: int
) -> tuple[float, np.ndarray]:
    """Chunks/s of the embedding service alone, batched as the retrieval service does,
    and the vectors it returned (in the order of ``texts``)."""
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        await stub.Embed(embedding_pb2.EmbedRequest(inputs=texts[:batch], truncate=True))
        slots = asyncio.Semaphore(concurrency)

        async def one(part: list[str]) -> list[list[float]]:
            async with slots:
                reply = await stub.Embed(embedding_pb2.EmbedRequest(inputs=part, truncate=True))
                return [list(e.values) for e in reply.embeddings]

        started = time.perf_counter()
        parts = await asyncio.gather(
            *(one(texts[i : i + batch]) for i in range(0, len(texts), batch))
        )
        rate = len(texts) / (time.perf_counter() - started)
        return rate, np.array([v for part in parts for v in part], dtype=np.float32)


async def ingest_throughput(addr: str, texts: list[str], per_request: int) -> tuple[float, int]:
    """Chunks/s end to end through UpsertDocuments into a fresh collection."""
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        collection = f"ingest-{int(time.time())}"
        await stub.UpsertDocuments(
            retrieval_pb2.UpsertDocumentsRequest(
                tenant_id=TENANT,
                collection=collection,
                documents=[retrieval_pb2.Document(id="warm", text="warm up")],
            )
        )
        chunks = 0
        started = time.perf_counter()
        for start in range(0, len(texts), per_request):
            reply = await stub.UpsertDocuments(
                retrieval_pb2.UpsertDocumentsRequest(
                    tenant_id=TENANT,
                    collection=collection,
                    documents=[
                        retrieval_pb2.Document(id=f"t{start + i}", text=text)
                        for i, text in enumerate(texts[start : start + per_request])
                    ],
                )
            )
            chunks += sum(result.chunks for result in reply.results)
        return chunks / (time.perf_counter() - started), chunks


async def job_throughput(addr: str, texts: list[str]) -> tuple[float, int]:
    """Chunks/s end to end of an ingestion job (what an upload starts): from the first
    message of SubmitIngestJob to the job's SUCCEEDED, which includes settling its writes."""
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        collection = f"job-{int(time.time())}"

        async def messages() -> AsyncIterator[retrieval_pb2.SubmitIngestJobRequest]:
            for start in range(0, len(texts), 100):
                part = retrieval_pb2.SubmitIngestJobRequest()
                if start == 0:
                    part.tenant_id, part.collection = TENANT, collection
                for i, text in enumerate(texts[start : start + 100]):
                    part.documents.add(id=f"j{start + i}", text=text)
                yield part

        started = time.perf_counter()
        job = await stub.SubmitIngestJob(messages())
        while job.state not in (retrieval_pb2.JOB_STATE_SUCCEEDED, retrieval_pb2.JOB_STATE_FAILED):
            await asyncio.sleep(0.05)
            job = await stub.GetIngestJob(
                retrieval_pb2.GetIngestJobRequest(tenant_id=TENANT, job_id=job.id)
            )
        elapsed = time.perf_counter() - started
        if job.state != retrieval_pb2.JOB_STATE_SUCCEEDED:
            raise SystemExit(f"ingestion job failed: {list(job.errors)}")
        return job.chunks_embedded / elapsed, job.chunks_embedded


def _cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wait_until_quiet(
    busy_share: float = 0.25, window: float = 2.0, windows: int = 5, limit: float = 300
) -> float:
    """Wait until the machine's CPUs have been mostly idle for ``windows`` windows in a row
    (Milvus compacts and indexes in the background after a bulk load, in bursts, which
    would be measured as search latency); returns the seconds waited."""
    started = time.monotonic()
    quiet = 0
    while quiet < windows and time.monotonic() - started < limit:
        busy0, total0 = _cpu_times()
        time.sleep(window)
        busy1, total1 = _cpu_times()
        quiet = quiet + 1 if (busy1 - busy0) / max(total1 - total0, 1) < busy_share else 0
    return time.monotonic() - started


def synthetic(count: int, seed: int = 7) -> np.ndarray:
    """Unit vectors around 2,000 random centres, isotropic noise in all 384 dimensions.

    The hard case for an approximate index: real embeddings spread over far fewer
    effective dimensions, so their neighbours are far better separated than these."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2000, DIM)).astype(np.float32)
    points = centres[rng.integers(0, len(centres), count)]
    points += rng.normal(scale=0.6, size=(count, DIM)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points


def like_real(real: np.ndarray, count: int, seed: int = 7) -> np.ndarray:
    """Unit vectors drawn from a Gaussian with the mean and covariance of real all-MiniLM
    embeddings (``real``): the spectrum of real chunk embeddings, at any count, without
    embedding 100,000 chunks (about 15 minutes on 2 cores)."""
    rng = np.random.default_rng(seed)
    mean = real.mean(axis=0)
    cov = np.cov(real, rowvar=False) + 1e-6 * np.eye(real.shape[1])
    points = rng.multivariate_normal(mean, cov, size=count, method="cholesky")
    points = points.astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points


async def build_large(
    uri: str, vectors: np.ndarray, name: str
) -> tuple[CollectionRef, np.ndarray, float]:
    count = len(vectors)
    store = MilvusStore.open(Settings(milvus_uri=uri, milvus_timeout_seconds=600))
    ref = CollectionRef(TENANT, f"{name}-{count}")
    await store.create(ref, DIM, index=IndexConfig("HNSW", 16, 200))
    await store.close()
    client = MilvusClient(uri=uri, timeout=600)
    started = time.perf_counter()
    for start in range(0, count, 5000):
        client.insert(
            ref.physical,
            [
                {
                    "id": f"v{i}#0",
                    "document_id": f"v{i}",
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "text": f"synthetic chunk {i}",
                    "content_hash": "x",
                    "metadata": {},
                    "embedding": vectors[i].tolist(),
                }
                for i in range(start, min(count, start + 5000))
            ],
        )
    client.flush(ref.physical)
    # Wait for the index to cover every row, then reload so search uses it.
    deadline = time.monotonic() + 1800
    while True:
        info = client.describe_index(ref.physical, "embedding")
        if int(info.get("indexed_rows", 0)) >= count or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    client.release_collection(ref.physical)
    client.load_collection(ref.physical)
    seconds = time.perf_counter() - started
    client.close()
    return ref, vectors, seconds


def hnsw_recall(
    uri: str, ref: CollectionRef, vectors: np.ndarray, queries: np.ndarray, ef: int = 64
) -> float:
    client = MilvusClient(uri=uri, timeout=60)
    found = 0
    for query in queries:
        exact = np.argsort(-(vectors @ query))[:10]
        result = client.search(
            ref.physical,
            data=[query.tolist()],
            limit=10,
            anns_field="embedding",
            search_params={"metric_type": "COSINE", "params": {"ef": ef}},
            output_fields=["document_id"],
            consistency_level="Session",
        )
        got = {hit["entity"]["document_id"] for hit in result[0]}
        found += len(got & {f"v{i}" for i in exact})
    client.close()
    return found / (10 * len(queries))


async def latencies(
    retrieval_addr: str, embedding_addr: str, uri: str, ref: CollectionRef, texts: list[str]
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"service": [], "direct": [], "embed": [], "overhead": []}
    async with (
        grpc.aio.insecure_channel(retrieval_addr) as r_channel,
        grpc.aio.insecure_channel(embedding_addr) as e_channel,
    ):
        search = retrieval_pb2_grpc.RetrievalServiceStub(r_channel)
        embed = embedding_pb2_grpc.EmbeddingServiceStub(e_channel)
        client = MilvusClient(uri=uri, timeout=60)

        async def direct_path(text: str) -> tuple[float, float]:
            started = time.perf_counter()
            reply = await embed.Embed(embedding_pb2.EmbedRequest(inputs=[text], truncate=True))
            embedded = time.perf_counter()
            vector = list(reply.embeddings[0].values)
            client.search(
                ref.physical,
                data=[vector],
                limit=10,
                anns_field="embedding",
                search_params={"metric_type": "COSINE", "params": {"ef": SEARCH_EF}},
                output_fields=["document_id", "chunk_index", "text", "metadata"],
                consistency_level="Session",  # as the service searches
            )
            return (embedded - started) * 1000, (time.perf_counter() - embedded) * 1000

        async def service_path(text: str) -> float:
            started = time.perf_counter()
            await search.Search(
                retrieval_pb2.SearchRequest(
                    tenant_id=TENANT, collection=ref.name, query=text, top_k=10
                )
            )
            return (time.perf_counter() - started) * 1000

        for i, text in enumerate(texts):
            # The two paths take turns going first, so neither always meets a warmer cache.
            if i % 2:
                served = await service_path(text)
                embedded, direct = await direct_path(text)
            else:
                embedded, direct = await direct_path(text)
                served = await service_path(text)
            if i >= 20:  # warm-up
                out["embed"].append(embedded)
                out["direct"].append(direct)
                out["service"].append(served)
                # Paired per query: what the service adds to that query's own two calls.
                out["overhead"].append(served - direct - embedded)
        client.close()
    return out


def render(figures: dict[str, float], lat: dict[str, list[float]], count: int) -> str:
    p50 = {k: statistics.median(v) for k, v in lat.items()}
    p99 = {k: percentile(v, 99) for k, v in lat.items()}
    overhead50, overhead99 = p50["overhead"], p99["overhead"]
    ratio = figures["ingest"] / figures["embed_throughput"]
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    load = f"1-minute load average {os.getloadavg()[0]:.1f} at the end"
    return "\n".join(
        [
            f"Measured {day} on a 2-core machine ({load}); real milvus-server 2.3.5 "
            "(standalone, no Docker), embedding and "
            "retrieval services as their own processes, load client in its own process.",
            "",
            "| measure | value | baseline (same run) | ratio / target |",
            "|---|---:|---:|---|",
            f"| ingest job (upload path), chunks/s end to end ({int(figures['chunks'])} "
            f"chunks) | {figures['ingest']:.1f} | embedding service alone: "
            f"{figures['embed_throughput']:.1f} | {ratio:.2f}x (target >= 0.80) |",
            f"| UpsertDocuments, 100 texts per call one after another, chunks/s | "
            f"{figures['upsert']:.1f} | embedding service alone: "
            f"{figures['embed_throughput']:.1f} | "
            f"{figures['upsert'] / figures['embed_throughput']:.2f}x |",
            f"| recall@10 HNSW (ef {SEARCH_EF}, the default) vs exact, {count:,} chunks like "
            "real ones | "
            f"{figures['recall']:.3f} | exact = 1.000 | target >= 0.95 |",
            f"| Search p50 / p99 ms, through the service | {p50['service']:.2f} / "
            f"{p99['service']:.2f} | direct pymilvus {p50['direct']:.2f} / "
            f"{p99['direct']:.2f}; query embedding {p50['embed']:.2f} / {p99['embed']:.2f} | "
            f"overhead p50 {overhead50:+.2f} ms, p99 {overhead99:+.2f} ms (target p50 <= 3) |",
            "",
            f"- recall@10 by search ef (AIMESH_HNSW_SEARCH_EF, default {SEARCH_EF}), vectors like "
            "real "
            "ones: "
            + ", ".join(f"ef {ef}: {figures[f'recall_ef{ef}']:.3f}" for ef in (64, 128, 256, 512))
            + "; the hard case (isotropic clusters): "
            + ", ".join(f"ef {ef}: {figures[f'hard_ef{ef}']:.3f}" for ef in (64, 128, 256, 512))
            + ".",
            f"- building each {count:,}-chunk collection (insert + HNSW index + load): "
            f"{figures['build_seconds']:.0f} s. Vectors like real ones: drawn from a Gaussian "
            "with the mean and covariance of the real all-MiniLM embeddings of the ingested "
            "texts, queries are real embeddings of other sentences. The hard case: unit vectors "
            "around 2,000 random centres with isotropic noise, queries from the same "
            "distribution.",
            f"- latency measured once the CPUs were quiet again (Milvus compacts and indexes "
            f"after the bulk load; waited {figures['quiet_wait']:.0f} s).",
            "- overhead = service - direct pymilvus - embedding call of the same query, then "
            "its p50 and p99 over the queries (the difference of the three p50s was "
            f"{p50['service'] - p50['direct'] - p50['embed']:+.2f} ms); the two paths take "
            "turns going first. The service also validates, checks the model and converts "
            "results to protobuf Structs.",
        ]
    )


def write_doc(section: str) -> None:
    write_section("retrieval", "Retrieval", section)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000, help="Size of the large index")
    parser.add_argument("--ingest-texts", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--no-write", action="store_true", help="Print only")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = bench_texts(args.ingest_texts)
    data = Path(tempfile.mkdtemp(prefix="aimesh-bench-retrieval-"))
    figures: dict[str, float] = {}
    try:
        with milvus_server(data / "milvus") as uri, service("aimesh-embedding", {}) as e_addr:
            retrieval_env = {
                "AIMESH_MILVUS_URI": uri,
                "EMBEDDING_SERVICE_ADDR": e_addr,
                "AIMESH_DATA_DIR": str(data / "retrieval"),
            }
            with service("aimesh-retrieval", retrieval_env) as r_addr:
                settings = Settings()
                figures["embed_throughput"], real = asyncio.run(
                    embedding_throughput(
                        e_addr, texts, settings.embed_batch_size, settings.embed_concurrency
                    )
                )
                figures["ingest"], chunks = asyncio.run(job_throughput(r_addr, texts))
                figures["chunks"] = chunks
                figures["upsert"], _ = asyncio.run(ingest_throughput(r_addr, texts, 100))
                print(
                    f"ingest job {figures['ingest']:.1f}/s, UpsertDocuments "
                    f"{figures['upsert']:.1f}/s vs embed {figures['embed_throughput']:.1f}/s"
                )
                # Queries: real embeddings of other sentences.
                _, queries = asyncio.run(
                    embedding_throughput(e_addr, bench_texts(args.queries, seed=11), 64, 2)
                )
                hard, _, figures["build_seconds_hard"] = asyncio.run(
                    build_large(uri, synthetic(args.chunks), "hard")
                )
                hard_vectors = synthetic(args.chunks)
                hard_queries = synthetic(args.queries, seed=99)
                ref, vectors, figures["build_seconds"] = asyncio.run(
                    build_large(uri, like_real(real, args.chunks), "like-real")
                )
                print(f"built 2 x {args.chunks} in {figures['build_seconds']:.0f}s")
                for ef in (64, 128, 256, 512):
                    figures[f"recall_ef{ef}"] = hnsw_recall(uri, ref, vectors, queries, ef)
                    figures[f"hard_ef{ef}"] = hnsw_recall(uri, hard, hard_vectors, hard_queries, ef)
                figures["recall"] = figures[f"recall_ef{SEARCH_EF}"]
                print({k: round(v, 3) for k, v in figures.items() if "_ef" in k})
                figures["quiet_wait"] = wait_until_quiet()
                lat = asyncio.run(
                    latencies(r_addr, e_addr, uri, ref, bench_texts(args.queries, seed=5))
                )
    finally:
        shutil.rmtree(data, ignore_errors=True)
    section = render(figures, lat, args.chunks)
    print(section)
    if not args.no_write:
        write_doc(section)


if __name__ == "__main__":
    main()
