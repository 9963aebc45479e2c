"""The embedding model: sentence-transformers on CPU, loaded from disk, never downloaded.

``Encoder`` is the small interface the servicer depends on, so a dynamic batcher or an
ONNX backend can replace :class:`TorchEncoder` without touching the gRPC layer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from aimesh_common.errors import InvalidArgument
from aimesh_embedding.config import Settings

# sentence-transformers sorts the inputs by length and encodes them in chunks of this size.
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


class Embeddings(NamedTuple):
    """Vectors (one row per input, L2-normalized) and the tokens the model consumed."""

    vectors: Vectors
    tokens: int


class Encoder(Protocol):
    """What the servicer needs from a model. ``embed`` is synchronous and may be slow."""

    @property
    def name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_input_tokens(self) -> int: ...

    @property
    def backend(self) -> str: ...

    def embed(self, texts: Sequence[str], truncate: bool, dimensions: int) -> Embeddings: ...


class ModelLoadError(Exception):
    """The model directory exists but does not hold a usable sentence-transformers model."""


class TorchEncoder:
    """A SentenceTransformer on CPU. Not thread-safe: call ``embed`` from one thread at a time."""

    backend = "torch"

    def __init__(self, model: Any, name: str) -> None:
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ModelLoadError(f"model {name!r} has no text tokenizer")
        # get_sentence_embedding_dimension was renamed in sentence-transformers 6.
        get_dimension = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension", None
        )
        dimension = get_dimension() if get_dimension is not None else None
        if not dimension:
            raise ModelLoadError(f"model {name!r} does not report an embedding dimension")
        self._model = model
        self._tokenizer = tokenizer
        self.name = name
        self.dimension = int(dimension)
        self.max_input_tokens = int(model.max_seq_length)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, before any truncation."""
        encoded = self._tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,  # no "sequence longer than the maximum" warning per long input
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: Sequence[str], truncate: bool, dimensions: int) -> Embeddings:
        """Embed ``texts`` in order; ``dimensions`` (0 = full) shortens and re-normalizes.

        Raises InvalidArgument for a ``dimensions`` above the model's, or, when ``truncate``
        is false, for an input longer than ``max_input_tokens``.
        """
        if dimensions < 0 or dimensions > self.dimension:
            raise InvalidArgument(
                f"dimensions is {dimensions}; the model {self.name} produces "
                f"{self.dimension}-dimensional vectors (0 keeps the full dimension)"
            )
        counts = self.count_tokens(texts)
        if not truncate:
            for index, count in enumerate(counts):
                if count > self.max_input_tokens:
                    raise InvalidArgument(
                        f"inputs[{index}] has {count} tokens; the model accepts at most "
                        f"{self.max_input_tokens} (set truncate=true to cut it)"
                    )
        if texts:
            encoded = self._model.encode(
                list(texts),
                batch_size=BATCH_SIZE,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            vectors: Vectors = np.asarray(encoded, dtype=np.float32)
        else:
            vectors = np.zeros((0, self.dimension), dtype=np.float32)
        if 0 < dimensions < self.dimension:
            vectors = shorten(vectors, dimensions)
        # The model cuts every input to max_input_tokens, so that is what it consumed.
        tokens = sum(min(count, self.max_input_tokens) for count in counts)
        return Embeddings(vectors=vectors, tokens=tokens)


def shorten(vectors: Vectors, dimensions: int) -> Vectors:
    """Keep the first ``dimensions`` components of each row and L2-normalize it again."""
    head = vectors[:, :dimensions]
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return np.asarray(head / np.maximum(norms, 1e-12), dtype=np.float32)


def load_encoder(settings: Settings) -> TorchEncoder:
    """Load ``settings.embedding_model`` from disk onto the CPU. Nothing is downloaded."""
    os.environ.update(_HF_ENVIRONMENT)
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(settings.embedding_model, device="cpu", local_files_only=True)
    except Exception as error:
        raise ModelLoadError(
            f"cannot load the embedding model from {settings.embedding_model}: {error}"
        ) from error
    model.eval()
    return TorchEncoder(model, settings.embedding_model_name)
