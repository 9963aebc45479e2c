"""The Rerank RPC over real gRPC with a real (tiny) cross-encoder built in the test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_embedding.config import Settings
from aimesh_embedding.rerank import CrossEncoderScorer, load_reranker
from aimesh_embedding.server import create_server
from tests.embedding.cross_encoder import build_tiny_cross_encoder

if TYPE_CHECKING:
    from aimesh.embedding.v1.embedding_pb2_grpc import EmbeddingServiceAsyncStub as Stub
    from aimesh_embedding.model import TorchEncoder

QUERY = "how do cats sleep"
TEXTS = [
    "Cats sleep for up to sixteen hours a day.",
    "The stock market fell sharply on Monday.",
    "A kitten naps in a sunny window.",
    "Bridges are built from steel and concrete.",
    "Dogs and cats are popular pets.",
]


@pytest.fixture(scope="module")
def rerank_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))


@pytest.fixture(scope="module")
def reranker(rerank_dir: Path) -> CrossEncoderScorer:
    scorer = load_reranker(Settings(port=0, metrics_port=None, rerank_model=str(rerank_dir)))
    assert scorer is not None
    return scorer


def _settings(rerank_dir: Path | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = {"port": 0, "host": "127.0.0.1", "metrics_port": None}
    if rerank_dir is not None:
        values["rerank_model"] = str(rerank_dir)
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
async def channel(
    embedding_encoder: TorchEncoder, reranker: CrossEncoderScorer, rerank_dir: Path
) -> AsyncIterator[grpc.aio.Channel]:
    settings = _settings(rerank_dir, max_inputs_per_request=8, max_input_chars=2000)
    server = create_server(settings, embedding_encoder, reranker=reranker)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened
    await server.stop(0)


@pytest.fixture(scope="module")
def stub(channel: grpc.aio.Channel) -> Stub:
    return embedding_pb2_grpc.EmbeddingServiceStub(channel)


def expected_scores(rerank_dir: Path, query: str, texts: list[str]) -> list[float]:
    """What sentence-transformers' own CrossEncoder.predict says."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(rerank_dir), device="cpu", local_files_only=True)
    return [float(x) for x in model.predict([(query, text) for text in texts])]


async def test_rerank_orders_by_the_cross_encoders_scores(stub: Stub, rerank_dir: Path) -> None:
    reply = await stub.Rerank(embedding_pb2.RerankRequest(query=QUERY, texts=TEXTS))
    expected = expected_scores(rerank_dir, QUERY, TEXTS)
    assert reply.model == rerank_dir.name
    assert sorted(r.index for r in reply.results) == list(range(len(TEXTS)))
    for result in reply.results:
        assert result.score == pytest.approx(expected[result.index], abs=1e-5)
    assert [r.index for r in reply.results] == sorted(range(len(TEXTS)), key=lambda i: -expected[i])
    # The tiny model's scores differ, so the order is a real ranking, not the input order.
    assert len({round(score, 4) for score in expected}) == len(TEXTS)
    assert reply.usage.prompt_tokens > len(TEXTS) * 4


async def test_top_n_keeps_the_best(stub: Stub) -> None:
    full = await stub.Rerank(embedding_pb2.RerankRequest(query=QUERY, texts=TEXTS))
    best = await stub.Rerank(embedding_pb2.RerankRequest(query=QUERY, texts=TEXTS, top_n=2))
    assert [r.index for r in best.results] == [r.index for r in full.results[:2]]


async def test_concurrent_calls_share_batches_and_get_their_own_scores(
    stub: Stub, rerank_dir: Path
) -> None:
    batches_before = REGISTRY.get_sample_value("aimesh_embedding_rerank_batch_inputs_count") or 0
    queries = [QUERY, "stock market news", "how are bridges built", "pets at home"] * 3
    replies = await asyncio.gather(
        *(stub.Rerank(embedding_pb2.RerankRequest(query=q, texts=TEXTS)) for q in queries)
    )
    for query, reply in zip(queries, replies, strict=True):
        expected = expected_scores(rerank_dir, query, TEXTS)
        got = {r.index: r.score for r in reply.results}
        assert got == pytest.approx(dict(enumerate(expected)), abs=1e-5)
    batches = (REGISTRY.get_sample_value("aimesh_embedding_rerank_batch_inputs_count") or 0) - (
        batches_before
    )
    assert 1 <= batches < len(queries)


async def test_long_pairs_are_cut_or_refused(stub: Stub, rerank_dir: Path) -> None:
    long_text = "cats " * 200
    reply = await stub.Rerank(
        embedding_pb2.RerankRequest(query=QUERY, texts=[long_text, TEXTS[0]], truncate=True)
    )
    expected = expected_scores(rerank_dir, QUERY, [long_text, TEXTS[0]])
    assert {r.index: r.score for r in reply.results} == pytest.approx(
        dict(enumerate(expected)), abs=1e-5
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Rerank(
            embedding_pb2.RerankRequest(query=QUERY, texts=[TEXTS[0], long_text], truncate=False)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "texts[1]" in (refused.value.details() or "")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (embedding_pb2.RerankRequest(query=" ", texts=["a"]), "query"),
        (embedding_pb2.RerankRequest(query="q", texts=[]), "texts must not be empty"),
        (embedding_pb2.RerankRequest(query="q", texts=["a", ""]), "texts[1]"),
        (embedding_pb2.RerankRequest(query="q", texts=["a"] * 9), "at most 8"),
        (embedding_pb2.RerankRequest(query="q", texts=["a", "b" * 2001]), "texts[1]"),
        (embedding_pb2.RerankRequest(query="q" * 2001, texts=["a"]), "query"),
    ],
)
async def test_invalid_requests_name_the_field(
    stub: Stub, request_: embedding_pb2.RerankRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Rerank(request_)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (error.value.details() or "")


async def test_bad_utf8_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    raw: Any = channel.unary_unary("/aimesh.embedding.v1.EmbeddingService/Rerank")
    # Field 1 (query), length 2, bytes that are not UTF-8.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await raw(b"\x0a\x02\xff\xfe")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in (error.value.details() or "")


async def test_info_names_the_rerank_model(stub: Stub, rerank_dir: Path) -> None:
    info = await stub.Info(embedding_pb2.InfoRequest())
    assert info.rerank_model == rerank_dir.name


async def test_without_a_rerank_model_rerank_is_a_failed_precondition(
    embedding_stub: Stub,
) -> None:
    info = await embedding_stub.Info(embedding_pb2.InfoRequest())
    assert info.rerank_model == ""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await embedding_stub.Rerank(embedding_pb2.RerankRequest(query="q", texts=["a"]))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "AIMESH_RERANK_MODEL" in (error.value.details() or "")


def test_settings_refuse_a_directory_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        _settings(rerank_model=str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match=r"no config\.json"):
        _settings(rerank_model=str(tmp_path))


def test_settings_name_the_model_after_its_directory(rerank_dir: Path) -> None:
    assert _settings(rerank_dir).rerank_model_name == rerank_dir.name
    assert _settings(rerank_dir, rerank_model_name="ms-marco").rerank_model_name == "ms-marco"
    assert load_reranker(_settings()) is None
