"""The embedding model behind a small interface, with the torch (sentence-transformers) backend.

An encoder tokenizes with the model's own ``tokenizer.json`` (the Rust ``tokenizers`` library,
so every backend cuts and counts tokens identically) and runs padded batches of token ids.
The dynamic batcher (:mod:`aimesh_embedding.batcher`) tokenizes each call when it arrives and
packs the inputs of many calls, sorted by length, into shared batches.

This module imports neither torch nor sentence-transformers at import time: an image that runs
the ``onnx`` backend has neither installed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from aimesh_common.errors import InvalidArgument
from aimesh_embedding.config import Settings

# Inputs per model batch when embedding directly (no batcher), as sentence-transformers does.
BATCH_SIZE = 32

# Read once by huggingface_hub / transformers when they are imported, so they are set before
# sentence_transformers is imported (lazily, in load_encoder). This is the one place the
# service writes os.environ: it guarantees no download is ever attempted and keeps tqdm
# progress bars out of the structured logs.
_HF_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}

Vectors = npt.NDArray[np.float32]
TokenIds = npt.NDArray[np.int64]


class Embeddings(NamedTuple):
    """Vectors (one row per input, L2-normalized) and the tokens the model consumed."""

    vectors: Vectors
    tokens: int


class ModelLoadError(Exception):
    """The model directory exists but does not hold a usable model."""


class Encoder(Protocol):
    """What the servicer and the batcher need from a model.

    ``tokenize`` is cheap and thread-safe; ``encode_ids`` is slow and must be called from
    one thread at a time.
    """

    @property
    def name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_input_tokens(self) -> int: ...

    @property
    def backend(self) -> str: ...

    def tokenize(self, texts: Sequence[str], truncate: bool) -> list[TokenIds]: ...

    def encode_ids(self, batch: Sequence[TokenIds]) -> Vectors: ...

    def embed(self, texts: Sequence[str], truncate: bool, dimensions: int) -> Embeddings: ...


class TextTokenizer:
    """The model's ``tokenizer.json`` with truncation and padding switched off.

    Truncation is done here like transformers does it: keep the first ``max_tokens - 1`` ids
    and the closing special token ([SEP]), so the model sees exactly what
    sentence-transformers would feed it.
    """

    def __init__(self, path: str) -> None:
        from tokenizers import Tokenizer

        if not os.path.isfile(path):
            raise ModelLoadError(f"tokenizer file {path} does not exist")
        try:
            tokenizer = Tokenizer.from_file(path)
        except Exception as error:
            raise ModelLoadError(f"cannot read the tokenizer {path}: {error}") from error
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, special tokens included, never truncated."""
        return [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]


class BaseEncoder:
    """Tokenization, limits, padding and ``dimensions``; subclasses run the network."""

    backend = ""

    def __init__(
        self, tokenizer: TextTokenizer, name: str, dimension: int, max_input_tokens: int
    ) -> None:
        self._tokenizer = tokenizer
        self.name = name
        self.dimension = dimension
        self.max_input_tokens = max_input_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, before any truncation."""
        return [len(ids) for ids in self._tokenizer.encode(texts)]

    def tokenize(self, texts: Sequence[str], truncate: bool) -> list[TokenIds]:
        """The ids the model will see per text.

        Raises InvalidArgument naming the first input longer than ``max_input_tokens`` when
        ``truncate`` is false.
        """
        limit = self.max_input_tokens
        result: list[TokenIds] = []
        for index, ids in enumerate(self._tokenizer.encode(texts)):
            if len(ids) > limit:
                if not truncate:
                    raise InvalidArgument(
                        f"inputs[{index}] has {len(ids)} tokens; the model accepts at most "
                        f"{limit} (set truncate=true to cut it)"
                    )
                ids = [*ids[: limit - 1], ids[-1]]
            result.append(np.asarray(ids, dtype=np.int64))
        return result

    def encode_ids(self, batch: Sequence[TokenIds]) -> Vectors:
        """L2-normalized vectors of one batch, padded to its longest input."""
        longest = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), longest), dtype=np.int64)
        attention_mask = np.zeros((len(batch), longest), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        vectors = self._forward(input_ids, attention_mask)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)

    def _forward(self, input_ids: TokenIds, attention_mask: TokenIds) -> Vectors:
        raise NotImplementedError

    def check_dimensions(self, dimensions: int) -> None:
        if dimensions < 0 or dimensions > self.dimension:
            raise InvalidArgument(
                f"dimensions is {dimensions}; the model {self.name} produces "
                f"{self.dimension}-dimensional vectors (0 keeps the full dimension)"
            )

    def embed(self, texts: Sequence[str], truncate: bool, dimensions: int) -> Embeddings:
        """Embed ``texts`` in order without a batcher: sorted by length, in batches of 32.

        ``dimensions`` (0 = full) shortens and re-normalizes. Raises InvalidArgument for a
        ``dimensions`` above the model's, or, when ``truncate`` is false, for an input longer
        than ``max_input_tokens``.
        """
        self.check_dimensions(dimensions)
        ids = self.tokenize(texts, truncate)
        vectors = np.zeros((len(ids), self.dimension), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), BATCH_SIZE):
            chunk = order[start : start + BATCH_SIZE]
            vectors[chunk] = self.encode_ids([ids[i] for i in chunk])
        return Embeddings(vectors=shorten(vectors, dimensions), tokens=sum(len(i) for i in ids))


def shorten(vectors: Vectors, dimensions: int) -> Vectors:
    """Keep the first ``dimensions`` components of each row and L2-normalize it again.

    0, or the full width, returns ``vectors`` unchanged.
    """
    if dimensions <= 0 or dimensions >= vectors.shape[1]:
        return vectors
    head = vectors[:, :dimensions]
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return np.asarray(head / np.maximum(norms, 1e-12), dtype=np.float32)


class TorchEncoder(BaseEncoder):
    """A SentenceTransformer on CPU (transformer, pooling, normalization) fed padded ids."""

    backend = "torch"

    def __init__(self, model: Any, name: str, tokenizer: TextTokenizer) -> None:
        # get_sentence_embedding_dimension was renamed in sentence-transformers 6.
        get_dimension = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension", None
        )
        dimension = get_dimension() if get_dimension is not None else None
        if not dimension:
            raise ModelLoadError(f"model {name!r} does not report an embedding dimension")
        super().__init__(tokenizer, name, int(dimension), int(model.max_seq_length))
        self._model = model

    def _forward(self, input_ids: TokenIds, attention_mask: TokenIds) -> Vectors:
        import torch

        ids = torch.from_numpy(input_ids)
        features = {
            "input_ids": ids,
            "attention_mask": torch.from_numpy(attention_mask),
            "token_type_ids": torch.zeros_like(ids),
        }
        with torch.inference_mode():
            output = self._model(features)["sentence_embedding"]
        return np.asarray(output.float().numpy(), dtype=np.float32)


def configure_torch(settings: Settings) -> None:
    """Process-wide torch options, before a torch model runs.

    oneDNN (``torch.backends.mkldnn``) compiles and caches a matrix-product kernel per batch
    shape, and the dynamic batcher makes a new shape of almost every batch: memory kept
    rising with the number of shapes served, up to the cache's 1,024 entries, and varied
    batches ran slower than through MKL. ``AIMESH_EMBEDDING_TORCH_ONEDNN`` turns it back on.
    """
    import torch

    torch.backends.mkldnn.enabled = settings.embedding_torch_onednn  # type: ignore[assignment]


def load_encoder(settings: Settings) -> TorchEncoder:
    """Load ``settings.embedding_model`` with sentence-transformers onto the CPU, offline."""
    os.environ.update(_HF_ENVIRONMENT)
    configure_torch(settings)
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(settings.embedding_model, device="cpu", local_files_only=True)
        tokenizer = TextTokenizer(os.path.join(settings.embedding_model, "tokenizer.json"))
    except Exception as error:
        raise ModelLoadError(
            f"cannot load the embedding model from {settings.embedding_model}: {error}"
        ) from error
    model.eval()
    return TorchEncoder(model, settings.embedding_model_name, tokenizer)


def load_backend(settings: Settings) -> Encoder:
    """The encoder of ``settings.embedding_backend``; only that backend's libraries load."""
    if settings.embedding_backend == "onnx":
        from aimesh_embedding.onnx_backend import load_onnx_encoder

        return load_onnx_encoder(settings)
    return load_encoder(settings)
