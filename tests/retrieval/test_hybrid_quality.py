"""Hybrid search with the default fusion never loses to the better single retriever.

The committed eval sets (BEIR layout) go through the real path: the real embedding model
behind its gRPC server, the retrieval server's UpsertDocuments (default chunking), and the
store's search on Milvus Lite with the options the servicer builds from the settings. On
each set, hybrid recall@5 must reach max(dense, BM25) - 0.01, and max + 0.01 where both
retrievers reach 0.3 and the better one leaves room (issue 16 §2; manpages here). With the
old default (``AIMESH_HYBRID_FUSION=weighted``, dense weight 0.9) both fail on manpages.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

from aimesh.retrieval.v1 import retrieval_pb2 as pb
from aimesh.retrieval.v1 import retrieval_pb2_grpc
from aimesh_cli.eval import documents_in_order, evaluate
from aimesh_common.embedding_client import EmbeddingClient
from aimesh_retrieval.config import Settings
from aimesh_retrieval.server import create_server
from aimesh_retrieval.store import CollectionRef, MilvusStore, SearchOptions
from scripts.eval_sets import beir

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data"
SETS = ("retrieval-eval", "retrieval-eval-manpages", "retrieval-eval-identifiers")
TENANT = "quality"
DEPTH = 30  # chunks per search: a document's rank is its best chunk's
TOLERANCE = 0.01
# Issue 16's second target: where both retrievers find at least 0.3 of the documents, hybrid
# finds 0.01 more than the better one. Read only where the better one leaves room for it
# (recall@5 at most 0.98): at 0.99, +0.01 would mean fixing every remaining miss.
GAIN = 0.01
ROOM = 0.98


async def recall_at_5(
    folder: Path,
    stub: retrieval_pb2_grpc.RetrievalServiceAsyncStub,
    store: MilvusStore,
    embedder: EmbeddingClient,
) -> dict[str, float]:
    """recall@5 of dense, BM25 and hybrid (default fusion) search over one eval set."""
    eval_set = beir.load(folder)
    collection = f"q{int(time.time() * 1000)}"
    await stub.CreateCollection(pb.CreateCollectionRequest(tenant_id=TENANT, collection=collection))
    items = list(eval_set.corpus.items())
    for start in range(0, len(items), 40):
        documents = [
            pb.Document(
                id=doc_id,
                text=f"{title}\n\n{text}" if title else text,
                metadata=struct_pb2.Struct(),
            )
            for doc_id, (title, text) in items[start : start + 40]
        ]
        await stub.UpsertDocuments(
            pb.UpsertDocumentsRequest(tenant_id=TENANT, collection=collection, documents=documents)
        )
    ref = CollectionRef(TENANT, collection)
    # Seal the rows, as a collection at rest would be (unsealed rows search slowly on Lite).
    await store._run(store._client.flush, ref.physical)
    settings = Settings()
    modes = {
        "dense": SearchOptions(mode="dense"),
        "bm25": SearchOptions(mode="bm25"),
        "hybrid": SearchOptions(
            mode="hybrid",
            fusion=settings.hybrid_fusion,
            dense_weight=settings.hybrid_dense_weight,
        ),
    }
    query_ids = list(eval_set.qrels)
    vectors = await embedder.embed([eval_set.queries[q] for q in query_ids])
    rankings: dict[str, dict[str, list[str]]] = {mode: {} for mode in modes}
    for query_id, vector in zip(query_ids, vectors, strict=True):
        for mode, options in modes.items():
            hits = await store.search(
                ref, vector, DEPTH, "", query=eval_set.queries[query_id], options=options
            )
            rankings[mode][query_id] = documents_in_order([h.document_id for h in hits])
    await stub.DeleteCollection(pb.DeleteCollectionRequest(tenant_id=TENANT, collection=collection))
    return {mode: evaluate(rankings[mode], eval_set.qrels)["recall@5"] for mode in modes}


@pytest.fixture(scope="module")
async def quality(
    embedding_addr: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, dict[str, float]]]:
    """recall@5 per set and mode, measured once for the module on a fresh Milvus Lite."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        data_dir=tmp_path_factory.mktemp("quality"),
        embedding_service_addr=embedding_addr,
        embed_timeout_seconds=120,
        milvus_timeout_seconds=120,
    )
    store = MilvusStore.open(settings)
    embedder = EmbeddingClient.connect(
        embedding_addr, batch_size=settings.embed_batch_size, concurrency=1, timeout=120
    )
    server = create_server(settings, store, embedder)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            yield {name: await recall_at_5(DATA / name, stub, store, embedder) for name in SETS}
    finally:
        await server.stop(0)
        await embedder.close()
        await store.close()


@pytest.mark.parametrize("name", SETS)
def test_hybrid_default_keeps_up_with_the_better_retriever(
    quality: dict[str, dict[str, float]], name: str
) -> None:
    recall = quality[name]
    print(f"{name}: recall@5 {recall} (fusion {Settings().hybrid_fusion})")
    assert recall["hybrid"] >= max(recall["dense"], recall["bm25"]) - TOLERANCE, recall


@pytest.mark.parametrize("name", SETS)
def test_hybrid_default_beats_the_better_retriever_where_there_is_room(
    quality: dict[str, dict[str, float]], name: str
) -> None:
    recall = quality[name]
    better = max(recall["dense"], recall["bm25"])
    if min(recall["dense"], recall["bm25"]) < 0.3 or better > ROOM:
        pytest.skip(f"{name}: no room for +{GAIN} over {better:.3f} ({recall})")
    assert recall["hybrid"] >= better + GAIN, recall
