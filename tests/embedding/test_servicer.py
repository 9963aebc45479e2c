"""EmbeddingService over real gRPC against the real model."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import grpc
import numpy as np
import pytest

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_embedding.config import Settings
from aimesh_embedding.server import create_server
from tests.embedding.texts import words

if TYPE_CHECKING:
    from aimesh.embedding.v1.embedding_pb2_grpc import EmbeddingServiceAsyncStub as Stub
    from aimesh_embedding.model import TorchEncoder


def as_array(response: embedding_pb2.EmbedResponse) -> np.ndarray:
    return np.array([list(item.values) for item in response.embeddings], dtype=np.float32)


async def embed(stub: Stub, *inputs: str, truncate: bool = False, dimensions: int = 0):
    return await stub.Embed(
        embedding_pb2.EmbedRequest(inputs=list(inputs), truncate=truncate, dimensions=dimensions),
        timeout=120,
    )


async def test_info_describes_the_model(embedding_stub: Stub) -> None:
    info = await embedding_stub.Info(embedding_pb2.InfoRequest(), timeout=10)
    assert info.model == "all-MiniLM-L6-v2"
    assert info.dimension == 384
    assert info.max_input_tokens == 256
    assert info.max_inputs_per_request == 256
    assert info.backend == "torch"


async def test_one_normalized_vector_per_input_in_order(embedding_stub: Stub) -> None:
    texts = [
        "The weather is lovely today.",
        "Machine learning models need data.",
        "x",
        words(120),
        "Bonjour, comment ça va ?",
    ]
    response = await embed(embedding_stub, *texts)
    assert response.model == "all-MiniLM-L6-v2"
    assert response.dimension == 384
    vectors = as_array(response)
    assert vectors.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    tokens = 0
    for index, text in enumerate(texts):
        alone = await embed(embedding_stub, text)
        np.testing.assert_allclose(vectors[index], as_array(alone)[0], atol=1e-5)
        tokens += alone.usage.prompt_tokens
    assert response.usage.prompt_tokens == tokens
    assert response.usage.total_tokens == tokens
    # The same call reversed gives the same vectors reversed.
    backwards = as_array(await embed(embedding_stub, *reversed(texts)))
    np.testing.assert_allclose(backwards[::-1], vectors, atol=1e-5)


async def test_similar_sentences_are_closer_than_unrelated_ones(embedding_stub: Stub) -> None:
    response = await embed(
        embedding_stub,
        "A man is playing a guitar on stage.",
        "Someone performs a song with an acoustic guitar.",
        "The central bank raised interest rates again.",
        "Inflation pushed the bank to increase its rates.",
    )
    guitar, guitar2, bank, bank2 = as_array(response)
    assert guitar @ guitar2 > guitar @ bank + 0.3
    assert bank @ bank2 > bank @ guitar2 + 0.3


async def test_dimensions_shorten_the_vectors(embedding_stub: Stub) -> None:
    full = as_array(await embed(embedding_stub, "hello world", "goodbye moon"))
    response = await embed(embedding_stub, "hello world", "goodbye moon", dimensions=64)
    assert response.dimension == 64
    short = as_array(response)
    assert short.shape == (2, 64)
    head = full[:, :64]
    np.testing.assert_allclose(short, head / np.linalg.norm(head, axis=1, keepdims=True), atol=1e-5)


async def test_truncate_accepts_a_long_input(embedding_stub: Stub) -> None:
    response = await embed(embedding_stub, "short", words(700), truncate=True)
    assert len(response.embeddings) == 2
    assert response.usage.prompt_tokens == 3 + 256


@pytest.mark.parametrize(
    ("inputs", "options", "message"),
    [
        ([], {}, "inputs must not be empty"),
        (["fine", ""], {}, "inputs[1] is empty"),
        (["fine", "fine", " \n\t "], {}, "inputs[2] contains only whitespace"),
        (["x" * 32769], {}, "inputs[0] has 32769 characters; at most 32768 are accepted"),
        (["ok"] * 257, {}, "inputs[256] and later are over the limit"),
        (
            ["ok", words(300)],
            {},
            "inputs[1] has 302 tokens; the model accepts at most 256 (set truncate=true to cut it)",
        ),
        (["ok"], {"dimensions": 385}, "dimensions is 385"),
    ],
    ids=[
        "none",
        "empty",
        "whitespace",
        "too-many-chars",
        "too-many-inputs",
        "too-many-tokens",
        "dimensions",
    ],
)
async def test_bad_input_is_invalid_argument(
    embedding_stub: Stub, inputs: list[str], options: dict[str, int], message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await embed(embedding_stub, *inputs, **options)  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_limits_are_inclusive(embedding_stub: Stub) -> None:
    response = await embed(embedding_stub, *(["ok"] * 255), "x" * 32768, truncate=True)
    assert len(response.embeddings) == 256


async def test_input_that_is_not_utf8_is_invalid_argument(
    embedding_channel: grpc.aio.Channel,
) -> None:
    # A raw EmbedRequest: field 1 (inputs), 2 bytes that are not UTF-8. Python clients cannot
    # even build such a message; other languages' clients (or a proxy bug) can send one.
    embed_raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = embedding_channel.unary_unary(
        "/aimesh.embedding.v1.EmbeddingService/Embed"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await embed_raw(b"\x0a\x02\xff\xfe", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "an input is not valid UTF-8; inputs must be UTF-8 text"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await embed_raw(b"\x0a\x10only-ten-b", timeout=10)  # length says 16, 10 follow
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid EmbedRequest" in (caught.value.details() or "")


async def test_oversized_message_is_refused_at_once(embedding_encoder: TorchEncoder) -> None:
    settings = Settings(port=0, host="127.0.0.1", metrics_port=None, max_message_bytes=64 * 1024)
    server = create_server(settings, embedding_encoder)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
            started = time.perf_counter()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await embed(stub, *(words(5000, start=i)[:30000] for i in range(4)), truncate=True)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max" in (caught.value.details() or "")
            assert time.perf_counter() - started < 2
            # Within the limit the same server answers.
            assert len((await embed(stub, "fits easily")).embeddings) == 1
    finally:
        await server.stop(0)


async def test_dimensions_equal_to_the_model_keep_the_vector(embedding_stub: Stub) -> None:
    full = await embed(embedding_stub, "hello world")
    same = await embed(embedding_stub, "hello world", dimensions=384)
    assert same.dimension == 384
    np.testing.assert_allclose(as_array(same), as_array(full), atol=1e-6)
    one = as_array(await embed(embedding_stub, "hello world", dimensions=1))
    assert one.shape == (1, 1)
    assert abs(one[0, 0]) == pytest.approx(1.0)
