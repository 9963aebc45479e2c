"""The encoder against sentence-transformers itself: same vectors, tokens and limits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aimesh_common.errors import InvalidArgument
from aimesh_embedding.config import Settings
from aimesh_embedding.model import TorchEncoder
from tests.embedding.texts import words

SENTENCES = [
    "The cat sits on the mat.",
    "Quantum computers use qubits instead of classical bits.",
    "A short one.",
    "Paris is the capital of France, and it is known for the Eiffel Tower and its museums.",
    "naïve café résumé — unicode text with punctuation!",
    "1 2 3 4 5",
]


@pytest.fixture(scope="module")
def reference(embedding_encoder: TorchEncoder) -> Any:
    """sentence-transformers loaded directly from the same directory: the oracle."""
    from sentence_transformers import SentenceTransformer

    settings = Settings(port=0, metrics_port=None)
    return SentenceTransformer(settings.embedding_model, device="cpu", local_files_only=True)


def test_describes_the_packaged_model(embedding_encoder: TorchEncoder) -> None:
    assert embedding_encoder.name == "all-MiniLM-L6-v2"
    assert embedding_encoder.dimension == 384
    assert embedding_encoder.max_input_tokens == 256
    assert embedding_encoder.backend == "torch"


def test_vectors_equal_sentence_transformers(
    embedding_encoder: TorchEncoder, reference: Any
) -> None:
    result = embedding_encoder.embed(SENTENCES, truncate=False, dimensions=0)
    assert result.vectors.dtype == np.float32
    assert result.vectors.shape == (len(SENTENCES), 384)
    # One call per sentence: no batching or length sorting on the reference side.
    for index, sentence in enumerate(SENTENCES):
        expected = reference.encode([sentence], convert_to_numpy=True)[0]
        np.testing.assert_allclose(result.vectors[index], expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)


def test_order_survives_length_sorting_across_batches(embedding_encoder: TorchEncoder) -> None:
    # More than one batch of 32, lengths deliberately not sorted.
    texts = [words(1 + (i * 37) % 60, start=i) + f" item {i}" for i in range(40)]
    together = embedding_encoder.embed(texts, truncate=False, dimensions=0).vectors
    for index in (0, 1, 31, 32, 39):
        alone = embedding_encoder.embed([texts[index]], truncate=False, dimensions=0).vectors[0]
        np.testing.assert_allclose(together[index], alone, atol=1e-5)


@pytest.mark.parametrize("dimensions", [1, 64, 128, 383])
def test_dimensions_shorten_and_renormalize(
    embedding_encoder: TorchEncoder, dimensions: int
) -> None:
    full = embedding_encoder.embed(SENTENCES, truncate=False, dimensions=0).vectors
    short = embedding_encoder.embed(SENTENCES, truncate=False, dimensions=dimensions).vectors
    assert short.shape == (len(SENTENCES), dimensions)
    assert short.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    head = full[:, :dimensions]
    np.testing.assert_allclose(short, head / np.linalg.norm(head, axis=1, keepdims=True), atol=1e-5)


def test_full_dimension_requested_explicitly(embedding_encoder: TorchEncoder) -> None:
    full = embedding_encoder.embed(SENTENCES, truncate=False, dimensions=0).vectors
    same = embedding_encoder.embed(SENTENCES, truncate=False, dimensions=384).vectors
    np.testing.assert_allclose(same, full, atol=1e-6)


def test_dimensions_above_the_model_are_rejected(embedding_encoder: TorchEncoder) -> None:
    with pytest.raises(InvalidArgument, match=r"dimensions is 385; .* 384-dimensional"):
        embedding_encoder.embed(["hello"], truncate=False, dimensions=385)


def test_token_count_matches_the_tokenizer(embedding_encoder: TorchEncoder, reference: Any) -> None:
    expected = [len(reference.tokenizer(text)["input_ids"]) for text in SENTENCES]
    assert embedding_encoder.count_tokens(SENTENCES) == expected
    result = embedding_encoder.embed(SENTENCES, truncate=False, dimensions=0)
    assert result.tokens == sum(expected)
    # [CLS] hello world [SEP]
    assert embedding_encoder.count_tokens(["hello world"]) == [4]


def test_longest_accepted_input_counts_special_tokens(embedding_encoder: TorchEncoder) -> None:
    fits = words(254)  # 254 words + [CLS] + [SEP] = 256 tokens
    assert embedding_encoder.count_tokens([fits]) == [256]
    result = embedding_encoder.embed(["short", fits], truncate=False, dimensions=0)
    assert result.tokens == 3 + 256

    with pytest.raises(InvalidArgument) as caught:
        embedding_encoder.embed(["short", fits, words(300)], truncate=False, dimensions=0)
    assert caught.value.message == (
        "inputs[2] has 302 tokens; the model accepts at most 256 (set truncate=true to cut it)"
    )
    with pytest.raises(InvalidArgument, match=r"^inputs\[0\] has 257 tokens"):
        embedding_encoder.embed([words(255)], truncate=False, dimensions=0)


def test_truncate_embeds_the_first_max_tokens(
    embedding_encoder: TorchEncoder, reference: Any
) -> None:
    long_text = words(600)
    result = embedding_encoder.embed([long_text, "short"], truncate=True, dimensions=0)
    # Usage counts what the model consumed: 256 for the cut input, 3 for "short".
    assert result.tokens == 256 + 3
    prefix = embedding_encoder.embed([words(254)], truncate=False, dimensions=0).vectors[0]
    np.testing.assert_allclose(result.vectors[0], prefix, atol=1e-5)
    np.testing.assert_allclose(
        result.vectors[0], reference.encode([long_text], convert_to_numpy=True)[0], atol=1e-5
    )
    # And the cut really happened: the tail of the text changes nothing.
    other_tail = words(254) + " completely different ending about spaceships" * 20
    tail = embedding_encoder.embed([other_tail], truncate=True, dimensions=0).vectors[0]
    np.testing.assert_allclose(tail, prefix, atol=1e-5)


def test_onednn_is_off_by_default_and_vectors_match_it(embedding_encoder: TorchEncoder) -> None:
    """Loading the torch backend turns oneDNN off (AIMESH_EMBEDDING_TORCH_ONEDNN, default
    false: its per-shape kernel cache grew memory with every new batch shape); MKL's
    products give the vectors oneDNN gives."""
    import torch

    from aimesh_embedding.model import configure_torch

    assert not torch.backends.mkldnn.enabled
    batch = embedding_encoder.tokenize(SENTENCES, truncate=False)
    without = embedding_encoder.encode_ids(batch)
    try:
        configure_torch(Settings(port=0, metrics_port=None, embedding_torch_onednn=True))
        assert torch.backends.mkldnn.enabled
        with_onednn = embedding_encoder.encode_ids(batch)
    finally:
        configure_torch(Settings(port=0, metrics_port=None))
    assert not torch.backends.mkldnn.enabled
    np.testing.assert_allclose(without, with_onednn, atol=1e-5)


def test_onednn_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMESH_EMBEDDING_TORCH_ONEDNN", "true")
    assert Settings(port=0, metrics_port=None).embedding_torch_onednn is True
    monkeypatch.delenv("AIMESH_EMBEDDING_TORCH_ONEDNN")
    assert Settings(port=0, metrics_port=None).embedding_torch_onednn is False
