"""Reranked search over real gRPC, real Milvus and the real embedding server, with a real
local rerank HTTP server (TEI and Cohere dialects, scoring by word overlap) and with the
embedding service's own cross-encoder (a tiny one built in the test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from aimesh.retrieval.v1 import retrieval_pb2
from aimesh_common.errors import Unavailable
from aimesh_retrieval.config import Settings
from aimesh_retrieval.rerank import HttpReranker
from aimesh_retrieval.store import MilvusStore
from tests.conftest import free_port
from tests.embedding.cross_encoder import build_tiny_cross_encoder
from tests.retrieval.conftest import Retrieval, new_collection
from tests.retrieval.rerank_server import RerankServer, overlap, serve_rerank, serve_retrieval

if TYPE_CHECKING:
    from aimesh_embedding.model import TorchEncoder

TENANT = "tenant-rerank"
QUERY = "quiet harbour lighthouse keeper"
DOCS = {
    "keeper": "The lighthouse keeper lived by the quiet harbour.",
    "painter": "A lighthouse keeper painted the tower red and white.",
    "boats": "Fishing boats come back to the harbour at dusk.",
    "beacon": "A tall coastal beacon guides ships at night; its guardian climbs the stairs.",
    "cake": "Bake the cake for forty minutes at a moderate heat.",
}


@pytest.fixture(scope="module")
async def rerank_http() -> AsyncIterator[RerankServer]:
    async with serve_rerank(api_key="secret-test-key") as server:
        yield server


@pytest.fixture(scope="module", params=["tei", "cohere"])
async def reranking(
    request: pytest.FixtureRequest,
    retrieval_store: MilvusStore,
    embedding_addr: str,
    rerank_http: RerankServer,
) -> AsyncIterator[Retrieval]:
    """Retrieval with the HTTP reranker, in each dialect on Milvus Lite; on the Milvus
    server in one (the dialect is the HTTP client's business, which the store never sees:
    the server variants check the store's part, the candidates it hands the reranker)."""
    if request.param != "tei" and retrieval_store.is_server:
        pytest.skip("the reranker's dialects are covered on Milvus Lite; one on the server")
    async for running in serve_retrieval(
        retrieval_store,
        embedding_addr,
        reranker="http",
        rerank_url=rerank_http.url,
        rerank_protocol=request.param,
        rerank_model="overlap-v1",
        rerank_api_key="secret-test-key",
    ):
        yield running


async def fill(retrieval: Retrieval, docs: dict[str, str], *, rerank: bool = False) -> str:
    collection = new_collection()
    await retrieval.stub.CreateCollection(
        retrieval_pb2.CreateCollectionRequest(
            tenant_id=TENANT, collection=collection, rerank=rerank
        )
    )
    await retrieval.stub.UpsertDocuments(
        retrieval_pb2.UpsertDocumentsRequest(
            tenant_id=TENANT,
            collection=collection,
            documents=[retrieval_pb2.Document(id=key, text=text) for key, text in docs.items()],
        )
    )
    return collection


async def search(
    retrieval: Retrieval, collection: str, query: str = QUERY, **fields: Any
) -> list[retrieval_pb2.ScoredChunk]:
    reply = await retrieval.stub.Search(
        retrieval_pb2.SearchRequest(tenant_id=TENANT, collection=collection, query=query, **fields)
    )
    return list(reply.chunks)


async def full_text(retrieval: Retrieval) -> bool:
    return await retrieval.store.full_text_supported()


def rerank_observations() -> float:
    return (
        REGISTRY.get_sample_value("aimesh_retrieval_search_seconds_count", {"stage": "rerank"})
        or 0.0
    )


async def test_rerank_returns_the_rerankers_order_and_scores(
    reranking: Retrieval, rerank_http: RerankServer
) -> None:
    collection = await fill(reranking, DOCS)
    mode = retrieval_pb2.SEARCH_MODE_HYBRID if await full_text(reranking) else 0
    plain = await search(reranking, collection, top_k=5, mode=mode)
    before = rerank_observations()
    reranked = await search(reranking, collection, top_k=5, mode=mode, rerank=True)
    assert rerank_observations() == before + 1

    expected = sorted(
        ((overlap(QUERY, DOCS[c.document_id]), c.document_id) for c in plain),
        key=lambda pair: -pair[0],
    )
    assert [c.document_id for c in reranked][:3] == ["keeper", "painter", "boats"]
    assert [c.score for c in reranked] == pytest.approx([score for score, _ in expected])
    # Ties keep the fused order: the reranker decides, the fusion breaks its ties.
    tied = [c.document_id for c in plain if c.document_id in ("beacon", "cake")]
    assert [c.document_id for c in reranked][3:] == tied
    assert [c.score for c in plain] != [c.score for c in reranked]

    path, body, headers = rerank_http.requests[-1]
    assert headers["authorization"] == "Bearer secret-test-key"
    if path == "/rerank":
        assert body["query"] == QUERY
        assert len(body["texts"]) == 5
    else:
        assert path == "/v1/rerank"
        assert body["model"] == "overlap-v1"
        assert len(body["documents"]) == 5


async def test_rerank_chooses_among_more_candidates_than_top_k(reranking: Retrieval) -> None:
    query = "how do green plants make food from sunlight"
    docs = {
        "leaves": "Photosynthesis lets leaves turn light into sugar for the plant.",
        "paint": "How do you make green paint? Mix food colouring from the shop.",
        "trains": "The night train to the coast leaves at ten.",
    }
    collection = await fill(reranking, docs)
    [dense] = await search(reranking, collection, query, top_k=1)
    assert dense.document_id == "leaves"
    [reranked] = await search(reranking, collection, query, top_k=1, rerank=True)
    assert reranked.document_id == "paint"
    assert reranked.score == pytest.approx(overlap(query, docs["paint"]))


async def test_the_collection_default_applies_unless_the_search_says_otherwise(
    reranking: Retrieval,
) -> None:
    collection = await fill(reranking, DOCS, rerank=True)
    listed = await reranking.stub.ListCollections(
        retrieval_pb2.ListCollectionsRequest(tenant_id=TENANT)
    )
    assert {c.name: c.rerank for c in listed.collections}[collection] is True
    by_default = await search(reranking, collection, top_k=3)
    assert [c.document_id for c in by_default] == ["keeper", "painter", "boats"]
    assert by_default[0].score == pytest.approx(1.0)
    plain = await search(reranking, collection, top_k=3, rerank=False)
    assert plain[0].score < 0.99  # a cosine similarity, not the reranker's full overlap
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await search(reranking, collection, mmr=True)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rerank=false" in (error.value.details() or "")
    diversified = await search(reranking, collection, mmr=True, rerank=False)
    assert len(diversified) == 5


async def test_mmr_and_rerank_together_are_invalid(reranking: Retrieval) -> None:
    collection = await fill(reranking, {"a": DOCS["keeper"]})
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await search(reranking, collection, mmr=True, rerank=True)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_without_a_reranker_asking_for_one_is_a_failed_precondition(
    retrieval: Retrieval, reranking: Retrieval
) -> None:
    collection = await fill(retrieval, {"a": DOCS["keeper"], "b": DOCS["cake"]})
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await search(retrieval, collection, rerank=True)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no reranker" in (error.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await fill(retrieval, {"a": "text"}, rerank=True)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # A collection that reranks by default (made where a reranker exists, same store) is
    # searched without reranking where none is configured.
    default_on = await fill(reranking, DOCS, rerank=True)
    plain = await search(retrieval, default_on, top_k=5)
    assert len(plain) == 5
    assert plain[0].score < 0.99


async def test_a_wrong_key_or_a_dead_reranker_is_reported_without_the_key(
    retrieval_store: MilvusStore, embedding_addr: str, rerank_http: RerankServer
) -> None:
    async for wrong in serve_retrieval(
        retrieval_store,
        embedding_addr,
        reranker="http",
        rerank_url=rerank_http.url,
        rerank_api_key="not-the-key",
    ):
        collection = await fill(wrong, {"a": DOCS["keeper"]})
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await search(wrong, collection, rerank=True)
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "AIMESH_RERANK_API_KEY" in (error.value.details() or "")
        assert "not-the-key" not in (error.value.details() or "")
    async for dead in serve_retrieval(
        retrieval_store,
        embedding_addr,
        reranker="http",
        rerank_url=f"http://127.0.0.1:{free_port()}",
        rerank_timeout_seconds=5,
    ):
        collection = await fill(dead, {"a": DOCS["keeper"]})
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await search(dead, collection, rerank=True)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "rerank" in (error.value.details() or "")


@pytest.mark.parametrize("protocol", ["tei", "cohere"])
async def test_an_answer_that_does_not_score_every_text_is_unavailable(
    rerank_http: RerankServer, protocol: str
) -> None:
    reranker = HttpReranker(
        rerank_http.url, protocol=protocol, api_key="secret-test-key", timeout=5
    )
    try:
        assert await reranker.scores("harbour", ["the harbour", "a cake"]) == [1.0, 0.0]
        rerank_http.short = True
        with pytest.raises(Unavailable, match="1 scores for 2 texts"):
            await reranker.scores("harbour", ["the harbour", "a cake"])
    finally:
        rerank_http.short = False
        await reranker.close()


@pytest.mark.parametrize("protocol", ["tei", "cohere"])
async def test_long_lists_go_in_calls_of_the_batch_size(
    rerank_http: RerankServer, protocol: str
) -> None:
    reranker = HttpReranker(
        rerank_http.url, protocol=protocol, api_key="secret-test-key", timeout=5, batch_size=2
    )
    texts = ["a cake", "the harbour", "harbour keeper", "lighthouse", "quiet harbour keeper"]
    before = len(rerank_http.requests)
    try:
        scores = await reranker.scores(QUERY, texts)
    finally:
        await reranker.close()
    assert scores == [overlap(QUERY, text) for text in texts]
    sent = rerank_http.requests[before:]
    assert [len(body.get("texts") or body["documents"]) for _, body, _ in sent] == [2, 2, 1]


@pytest.fixture(scope="module")
async def cross_encoder_embedding(
    embedding_encoder: TorchEncoder, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Path]]:
    """A real embedding server that also serves a tiny cross-encoder, and its directory."""
    from aimesh_embedding.config import Settings as EmbeddingSettings
    from aimesh_embedding.rerank import load_reranker
    from aimesh_embedding.server import create_server as create_embedding_server

    directory = build_tiny_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))
    settings = EmbeddingSettings(
        port=0, host="127.0.0.1", metrics_port=None, rerank_model=str(directory)
    )
    server = create_embedding_server(settings, embedding_encoder, reranker=load_reranker(settings))
    await server.start()
    yield f"127.0.0.1:{server.port}", directory
    await server.stop(0)


async def test_the_embedding_services_cross_encoder_reranks(
    retrieval_store: MilvusStore, cross_encoder_embedding: tuple[str, Path]
) -> None:
    from sentence_transformers import CrossEncoder

    addr, directory = cross_encoder_embedding
    async for retrieval in serve_retrieval(retrieval_store, addr, reranker="embedding"):
        collection = await fill(retrieval, DOCS)
        candidates = await search(retrieval, collection, top_k=50, rerank=False)
        reranked = await search(retrieval, collection, top_k=3, rerank=True)
    model = CrossEncoder(str(directory), device="cpu", local_files_only=True)
    scores = model.predict([(QUERY, chunk.text) for chunk in candidates])
    best = sorted(range(len(candidates)), key=lambda i: -float(scores[i]))[:3]
    assert [c.chunk_id for c in reranked] == [candidates[i].chunk_id for i in best]
    assert [c.score for c in reranked] == pytest.approx([float(scores[i]) for i in best], abs=1e-5)


def test_settings_of_the_http_reranker(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="AIMESH_RERANK_URL"):
        Settings(reranker="http")
    key_file = tmp_path / "key"
    key_file.write_text("file-key\n")
    settings = Settings(reranker="http", rerank_url="http://tei:8080", rerank_api_key_file=key_file)
    assert settings.rerank_api_key is not None
    assert settings.rerank_api_key.get_secret_value() == "file-key"
    assert "file-key" not in repr(settings)
    assert Settings(rerank_api_key="  ").rerank_api_key is None
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ValidationError, match="empty"):
        Settings(rerank_api_key_file=empty)


async def test_a_keep_alive_connection_the_server_dropped_is_retried_on_a_fresh_one() -> None:
    """A server that closes an idle keep-alive connection as the next request goes (its
    keep-alive timer ran out) is asked again on a new connection, not reported down."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        served = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":", 1)[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
            )
            await reader.readexactly(length)
            if served == 1:  # the second request on this connection: drop it unanswered
                writer.close()
                return
            body = b'[{"index": 0, "score": 0.5}]'
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + b"content-length: %d\r\n\r\n" % len(body)
                + body
            )
            await writer.drain()
            served += 1

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reranker = HttpReranker(f"http://127.0.0.1:{port}", protocol="tei", timeout=5)
    try:
        assert await reranker.scores("q", ["a"]) == [0.5]
        assert await reranker.scores("q", ["a"]) == [0.5]
    finally:
        await reranker.close()
        server.close()
        await server.wait_closed()
    assert connections == 2
