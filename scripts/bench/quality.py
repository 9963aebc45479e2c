"""Retrieval quality benchmark (``make bench-quality``); writes its section of docs/benchmarks.md.

Every eval set (tests/data/retrieval-eval, the committed tests/data/retrieval-eval-*, and
the run-time sets of scripts/eval_sets/build.py) x every search mode the retrieval service
offers today: dense, bm25, hybrid with the service's default fusion (weighted, default
dense weight) and hybrid rrf; recall@1/5/10, MRR@10, nDCG@10 and the per-set winner.

On the real path: the real embedding model (all-MiniLM-L6-v2) behind the embedding gRPC
server, the retrieval gRPC server from ``create_server`` on port 0 with its default
settings (chunker, fusion), Milvus Lite; documents go in through UpsertDocuments as
``aimesh eval`` sends them (with chunk context the title in the metadata, from where
every chunk carries it; without, "title\\n\\ntext"). Queries run through the service's
own store search with the options its Search RPC builds (the code under the RPC), each
query embedded once by the service's embedding client rather than once per mode.

With a cross-encoder directory (``--rerank-model DIR`` or ``RERANK_MODEL_DIR=DIR make
bench-quality``) the embedding server also serves it, and a ``hybrid+rerank`` row reranks
the default hybrid's best ``AIMESH_RERANK_CANDIDATES`` chunks with it through the Rerank
RPC (the retrieval service's own :func:`~aimesh_retrieval.rerank.rerank_hits`), keeping
the first ``HYBRID_TOP_K``.

Fusion, offline: each query's dense and BM25 chunk lists with scores (top 100 each) are
fetched once and kept (``.aimesh/bench-quality/<set>.json``); the fusion methods of
``aimesh_retrieval.fusion`` are evaluated on them in Python, with each method's recall@5
per set, its margin against max(dense, BM25) and the method whose worst margin is best.
``--offline`` recomputes that part from the kept lists without any server.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aimesh_cli.eval import METRICS, corpus_document, documents_in_order, evaluate
from aimesh_common.embedding_client import EmbeddingClient
from aimesh_retrieval import fusion
from aimesh_retrieval.config import Settings
from aimesh_retrieval.rerank import EmbeddingReranker, rerank_hits
from aimesh_retrieval.store import CollectionRef, MilvusStore, SearchOptions
from scripts.bench.doc import write_section
from scripts.eval_sets import beir
from scripts.eval_sets.build import ensure_generated

ROOT = Path(__file__).resolve().parents[2]
KEPT = ROOT / ".aimesh" / "bench-quality"
TENANT = "bench-quality"
DEPTH = 100  # chunks per single-retriever list (the service's MAX_TOP_K)
HYBRID_TOP_K = 30  # what `aimesh eval` asks hybrid search for
UPSERT_DOCUMENTS = 40

Lists = dict[str, dict[str, list[tuple[str, str, float]]]]  # query -> mode -> [(chunk, doc, score)]


def eval_sets() -> list[Path]:
    data = ROOT / "tests" / "data"
    committed = sorted(p for p in data.glob("retrieval-eval*") if (p / "qrels").is_dir())
    return committed + ensure_generated()


# Online: the real services


async def upsert_retrying(stub: Any, request: Any, attempts: int = 5) -> None:
    """UpsertDocuments, again when the server closed the connection under it (its
    maximum connection age passes during a slow upsert on a busy machine); an upsert of
    the same documents is idempotent."""
    import grpc

    for attempt in range(attempts):
        try:
            await stub.UpsertDocuments(request)
            return
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                raise
            await asyncio.sleep(1.0)


async def measure_set(
    stub: Any,
    store: MilvusStore,
    embedder: EmbeddingClient,
    settings: Settings,
    eval_set: beir.BeirSet,
    concurrency: int = 2,
    *,
    rerank: bool = False,
) -> tuple[Lists, float]:

    from aimesh.retrieval.v1 import retrieval_pb2 as pb

    collection = f"q-{eval_set.name}-{int(time.time())}"
    info = await stub.CreateCollection(
        pb.CreateCollectionRequest(tenant_id=TENANT, collection=collection)
    )
    started = time.perf_counter()
    items = list(eval_set.corpus.items())
    for start in range(0, len(items), UPSERT_DOCUMENTS):
        documents = []
        for doc_id, (title, text) in items[start : start + UPSERT_DOCUMENTS]:
            body, metadata = corpus_document(doc_id, title, text, context=info.chunking.context)
            document = pb.Document(id=doc_id, text=body)
            document.metadata.update(metadata)
            documents.append(document)
        await upsert_retrying(
            stub,
            pb.UpsertDocumentsRequest(tenant_id=TENANT, collection=collection, documents=documents),
        )
    ingest_seconds = time.perf_counter() - started
    # Searches: the service's own code path below the RPC (its store's search with the
    # options the servicer builds), each query embedded once by the service's embedding
    # client instead of once per mode: four times fewer model calls on a busy machine.
    ref = CollectionRef(TENANT, collection)
    # Seal the freshly written rows (Milvus Lite searches unsealed rows slowly, about a
    # second per search at 5,000 chunks here), as a collection at rest would be.
    await store._run(store._client.flush, ref.physical)
    query_ids = list(eval_set.qrels)
    vectors = await embedder.embed([eval_set.queries[q] for q in query_ids])
    modes = {
        "dense": (SearchOptions(mode="dense"), DEPTH),
        "bm25": (SearchOptions(mode="bm25"), DEPTH),
        "hybrid": (
            SearchOptions(
                mode="hybrid",
                fusion=settings.hybrid_fusion,
                dense_weight=settings.hybrid_dense_weight,
            ),
            HYBRID_TOP_K,
        ),
        "hybrid-rrf": (SearchOptions(mode="hybrid", fusion="rrf"), HYBRID_TOP_K),
    }
    lists: Lists = {}
    gate = asyncio.Semaphore(concurrency)
    reranker = EmbeddingReranker(embedder) if rerank else None
    candidates = max(HYBRID_TOP_K, settings.rerank_candidates)

    async def run(query_id: str, vector: Sequence[float]) -> None:
        query = eval_set.queries[query_id]
        async with gate:
            found: dict[str, list[tuple[str, str, float]]] = {}
            for mode, (options, top_k) in modes.items():
                hits = await store.search(ref, vector, top_k, "", query=query, options=options)
                found[mode] = [(h.chunk_id, h.document_id, h.score) for h in hits]
            if reranker is not None:
                options = modes["hybrid"][0]
                hits = await store.search(ref, vector, candidates, "", query=query, options=options)
                hits = await rerank_hits(reranker, query, hits, HYBRID_TOP_K)
                found["hybrid+rerank"] = [(h.chunk_id, h.document_id, h.score) for h in hits]
            lists[query_id] = found

    await asyncio.gather(*(run(q, v) for q, v in zip(query_ids, vectors, strict=True)))
    await stub.DeleteCollection(pb.DeleteCollectionRequest(tenant_id=TENANT, collection=collection))
    return lists, ingest_seconds


async def measure(
    folders: Sequence[Path], data: Path, rerank_model: str = ""
) -> dict[str, dict[str, Any]]:
    import grpc

    from aimesh.retrieval.v1 import retrieval_pb2_grpc
    from aimesh_embedding.config import Settings as EmbeddingSettings
    from aimesh_embedding.model import load_encoder
    from aimesh_embedding.rerank import load_reranker
    from aimesh_embedding.server import create_server as embedding_server
    from aimesh_retrieval.server import create_server

    embedding_settings = EmbeddingSettings(
        port=0, host="127.0.0.1", metrics_port=None, rerank_model=rerank_model
    )
    cross_encoder = load_reranker(embedding_settings)
    embedding = embedding_server(
        embedding_settings, load_encoder(embedding_settings), reranker=cross_encoder
    )
    await embedding.start()
    settings = Settings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        data_dir=data,
        embedding_service_addr=f"127.0.0.1:{embedding.port}",
        embed_timeout_seconds=600,
        milvus_timeout_seconds=120,
    )
    store = MilvusStore.open(settings)
    embedder = EmbeddingClient.connect(
        settings.embedding_service_addr,
        batch_size=settings.embed_batch_size,
        concurrency=settings.embed_concurrency,
        timeout=settings.embed_timeout_seconds,
    )
    server = create_server(settings, store, embedder)
    await server.start()
    results: dict[str, dict[str, Any]] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            for folder in folders:
                eval_set = beir.load(folder)
                started = time.perf_counter()
                lists, ingest = await measure_set(
                    stub, store, embedder, settings, eval_set, rerank=cross_encoder is not None
                )
                results[eval_set.name] = {
                    "documents": len(eval_set.corpus),
                    "queries": len(eval_set.qrels),
                    "ingest_seconds": ingest,
                    "seconds": time.perf_counter() - started,
                    "fusion": settings.hybrid_fusion,
                    "dense_weight": settings.hybrid_dense_weight,
                    "rerank_model": cross_encoder.name if cross_encoder is not None else "",
                    "rerank_candidates": settings.rerank_candidates,
                    "lists": lists,
                }
                KEPT.mkdir(parents=True, exist_ok=True)
                (KEPT / f"{eval_set.name}.json").write_text(json.dumps(results[eval_set.name]))
                print(
                    f"{eval_set.name}: {len(eval_set.corpus)} documents, {len(lists)} queries, "
                    f"{results[eval_set.name]['seconds']:.0f} s",
                    flush=True,
                )
    finally:
        await server.stop(0)
        await embedder.close()
        await store.close()
        await embedding.stop(0)
    return results


# Scoring


def mode_metrics(
    kept: dict[str, Any], qrels: dict[str, dict[str, int]]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    modes = next(iter(kept["lists"].values())).keys()
    for mode in modes:
        rankings = {
            q: documents_in_order([doc for _, doc, _ in found[mode]])
            for q, found in kept["lists"].items()
        }
        out[mode] = evaluate(rankings, qrels)
    return out


Method = Callable[[fusion.Ranking, fusion.Ranking], list[fusion.Scored]]


def methods(default_weight: float) -> dict[str, Method]:
    found: dict[str, Method] = {
        "dense": lambda d, b: list(d),
        "bm25": lambda d, b: list(b),
        f"weighted {default_weight:g} (the former default)": functools.partial(
            _weighted, dense_weight=default_weight
        ),
        "rrf k=60": functools.partial(fusion.rrf, k=60),
        "rrf k=10": functools.partial(fusion.rrf, k=10),
        "dbsf": fusion.dbsf,
    }
    for weight in (0.3, 0.5, 0.7):
        found[f"min-max w={weight:g}"] = functools.partial(fusion.convex, dense_weight=weight)
    found["adaptive (3-sigma)"] = fusion.adaptive
    found["adaptive (3-sigma, a=2)"] = functools.partial(fusion.adaptive, sharpness=2.0)
    found["adaptive (min-max)"] = functools.partial(fusion.adaptive, normalise=fusion.minmax)
    return found


def _weighted(
    dense: fusion.Ranking, bm25: fusion.Ranking, dense_weight: float
) -> list[fusion.Scored]:
    return fusion.milvus_weighted(dense, bm25, dense_weight)


def offline(kept: dict[str, Any], qrels: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    doc_of: dict[str, str] = {}
    out: dict[str, dict[str, float]] = {}
    for name, method in methods(kept["dense_weight"]).items():
        rankings: dict[str, list[str]] = {}
        for query_id, found in kept["lists"].items():
            dense = [(chunk, score) for chunk, _, score in found["dense"]]
            bm25 = [(chunk, score) for chunk, _, score in found["bm25"]]
            for chunk, doc, _ in found["dense"] + found["bm25"]:
                doc_of[chunk] = doc
            fused = method(dense, bm25)
            rankings[query_id] = documents_in_order([doc_of[chunk] for chunk, _ in fused])
        out[name] = evaluate(rankings, qrels)
    return out


def replica_agreement(kept: dict[str, Any]) -> float:
    """Share of queries whose top-5 documents by the offline replica of today's weighted
    fusion equal the service's own hybrid top 5 (checks that the replica is faithful)."""
    same = 0
    for found in kept["lists"].values():
        doc_of = {chunk: doc for chunk, doc, _ in found["dense"] + found["bm25"]}
        dense = [(chunk, score) for chunk, _, score in found["dense"]]
        bm25 = [(chunk, score) for chunk, _, score in found["bm25"]]
        fused = fusion.milvus_weighted(dense, bm25, kept["dense_weight"])
        replica = documents_in_order([doc_of[chunk] for chunk, _ in fused])[:5]
        service = documents_in_order([doc for _, doc, _ in found["hybrid"]])[:5]
        same += replica == service
    return same / max(len(kept["lists"]), 1)


# Report


def fusion_label(kept: dict[str, Any]) -> str:
    """The fusion a run used: the dense weight only where the method has one."""
    name = str(kept["fusion"])
    return f"{name} {kept['dense_weight']:g}" if name == "weighted" else name


def render(
    folders: Sequence[Path], results: dict[str, dict[str, Any]]
) -> tuple[str, dict[str, Any]]:
    sets = {beir.load(folder).name: beir.load(folder) for folder in folders}
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    load = os.getloadavg()[0]
    first = next(iter(results.values()))
    lines = [
        f"Measured {day} on a shared 2-core machine (1-minute load average {load:.1f} when "
        "written; recall and rank do not depend on load). Real path: all-MiniLM-L6-v2 behind "
        "the embedding gRPC server, the retrieval gRPC server (`create_server`, default "
        "chunking 200/32 tokens, "
        f"default hybrid fusion {fusion_label(first)}), Milvus Lite; "
        "documents ingested through UpsertDocuments, queries through the store search "
        "under the Search RPC, each embedded once (hybrid asks "
        f"for {HYBRID_TOP_K} chunks, as `aimesh eval`). Sets: `make bench-quality` builds the "
        "run-time ones with `scripts/eval_sets/build.py`; a document's rank is its best chunk's.",
    ]
    if first.get("rerank_model"):
        lines += [
            "",
            f"hybrid+rerank: the default hybrid's best {first['rerank_candidates']} chunks "
            f"reranked by the cross-encoder `{first['rerank_model']}` (Rerank RPC of the "
            f"embedding server), first {HYBRID_TOP_K} kept.",
        ]
    lines += [
        "",
        "| set | docs / queries | mode | " + " | ".join(METRICS) + " |",
        "|---|---|---|" + "---:|" * len(METRICS),
    ]
    summary: dict[str, Any] = {}
    for name, kept in results.items():
        qrels = sets[name].qrels
        per_mode = mode_metrics(kept, qrels)
        winner = max(per_mode, key=lambda m: (per_mode[m]["recall@5"], per_mode[m]["ndcg@10"]))
        for mode, values in per_mode.items():
            mark = " **(winner)**" if mode == winner else ""
            lines.append(
                f"| {name} | {kept['documents']} / {kept['queries']} | {mode}{mark} | "
                + " | ".join(f"{values[m]:.3f}" for m in METRICS)
                + " |"
            )
        summary[name] = {"modes": per_mode, "offline": offline(kept, qrels)}
        summary[name]["replica_agreement"] = replica_agreement(kept)
    names = list(results)
    lines += [
        "",
        "Fusion compared offline on the same dense and BM25 lists (top 100 chunks "
        "each, with scores): recall@5 per set (margin against max(dense, BM25) in brackets), "
        "the worst margin, and whether the issue's target holds on every set (>= max - 0.01; "
        ">= max + 0.01, at most 1.0, where both reach 0.3).",
        "",
    ]
    ranking = offline_table(lines, names, summary, "recall@5", target=True)
    lines += [
        "",
        "The same for MRR@10 (recall@5 saturates on the identifier look-ups; MRR shows "
        "whether the right document comes first):",
        "",
    ]
    mrr_ranking = offline_table(lines, names, summary, "mrr@10", target=False)
    agreement = ", ".join(f"{n} {summary[n]['replica_agreement']:.2f}" for n in names)
    lines += [
        "",
        "The offline replica of today's weighted fusion (Milvus' normalisation) gives the "
        f"service's own hybrid top 5 on this share of queries: {agreement}.",
    ]
    fused = [item for item in ranking if item[2] not in ("dense", "bm25")]
    best_worst, best_mean, best_method = max(fused)  # worst case first, then the mean
    mrr_worst, mrr_mean, mrr_method = max(i for i in mrr_ranking if i[2] not in ("dense", "bm25"))
    lines += [
        "",
        f"Best worst case, recall@5: **{best_method}** ({best_worst:+.3f} against the better "
        f"single retriever on its hardest set, {best_mean:+.3f} on average); MRR@10: "
        f"**{mrr_method}** ({mrr_worst:+.3f}, {mrr_mean:+.3f} on average).",
    ]
    summary["_best"] = {"method": best_method, "worst_margin": best_worst, "mean": best_mean}
    summary["_best_mrr"] = {"method": mrr_method, "worst_margin": mrr_worst, "mean": mrr_mean}
    return "\n".join(lines), summary


def offline_table(
    lines: list[str], names: list[str], summary: dict[str, Any], metric: str, *, target: bool
) -> list[tuple[float, float, str]]:
    """Append one table (method x set) of ``metric`` with margins; (worst, mean, method)s."""
    lines.append(
        "| method | "
        + " | ".join(names)
        + " | worst margin |"
        + (" target met |" if target else "")
    )
    lines.append("|---|" + "---:|" * (len(names) + 1) + ("---|" if target else ""))
    ranking: list[tuple[float, float, str]] = []
    for method in summary[names[0]]["offline"]:
        cells, margins, met = [], [], True
        for name in names:
            off = summary[name]["offline"]
            best = max(off["dense"][metric], off["bm25"][metric])
            both = min(off["dense"][metric], off["bm25"][metric]) >= 0.3
            value = off[method][metric]
            margins.append(value - best)
            # +0.01 where both retrievers reach 0.3 (at most a perfect 1.0), else -0.01.
            wanted = min(best + 0.01, 1.0) if both else best - 0.01
            met = met and value >= wanted - 1e-9
            cells.append(f"{value:.3f} ({value - best:+.3f})")
        worst = min(margins)
        ranking.append((worst, sum(margins) / len(margins), method))
        row = f"| {method} | " + " | ".join(cells) + f" | {worst:+.3f} |"
        if target:
            row += " - |" if method in ("dense", "bm25") else (" yes |" if met else " no |")
        lines.append(row)
    return ranking


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", help="Comma-separated set names (default: all)")
    parser.add_argument("--offline", action="store_true", help="Score the kept lists only")
    parser.add_argument("--no-write", action="store_true", help="Print only")
    parser.add_argument(
        "--rerank-model",
        default=os.environ.get("RERANK_MODEL_DIR", ""),
        help="Cross-encoder directory: adds a hybrid+rerank row (env RERANK_MODEL_DIR)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folders = eval_sets()
    if args.sets:
        wanted = {s.strip() for s in args.sets.split(",")}
        folders = [f for f in folders if beir.load(f).name in wanted]
    if args.offline:
        results = {
            beir.load(f).name: json.loads((KEPT / f"{beir.load(f).name}.json").read_text())
            for f in folders
        }
    else:
        data = Path(tempfile.mkdtemp(prefix="aimesh-bench-quality-"))
        try:
            results = asyncio.run(measure(folders, data, args.rerank_model))
        finally:
            shutil.rmtree(data, ignore_errors=True)
    section, summary = render(folders, results)
    print(section)
    (KEPT / "summary.json").write_text(json.dumps(summary, indent=1))
    if not args.no_write:
        write_section("quality", "Retrieval quality", section)


if __name__ == "__main__":
    main()
