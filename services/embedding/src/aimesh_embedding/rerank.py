"""The rerank model: a sentence-transformers ``CrossEncoder`` that scores query/text pairs.

Pairs are tokenized with the model's own ``tokenizer.json`` (the Rust ``tokenizers``
library, as the embedding encoders do) into ids and token types, and run through the
dynamic batcher (:mod:`aimesh_embedding.batcher`) like embedding inputs: concurrent Rerank
calls share length-bucketed batches. A batch goes through the CrossEncoder's modules and
its activation (sigmoid for a one-label model), so the scores equal
``CrossEncoder.predict``'s.

Like :mod:`aimesh_embedding.model`, this module imports torch and sentence-transformers
only when a model is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aimesh_common.errors import InvalidArgument
from aimesh_embedding.config import Settings
from aimesh_embedding.model import (
    _HF_ENVIRONMENT,
    ModelLoadError,
    TokenIds,
    Vectors,
    configure_torch,
)


@dataclass(frozen=True, eq=False)
class PairIds:
    """One tokenized query/text pair: ``[CLS] query [SEP] text [SEP]`` and its token types."""

    ids: TokenIds
    type_ids: TokenIds

    def __len__(self) -> int:
        return len(self.ids)


class PairTokenizer:
    """The model's ``tokenizer.json`` for pairs: once uncut (to count and to refuse), once
    cut to ``max_tokens`` longest part first (as ``CrossEncoder.predict`` cuts)."""

    def __init__(self, path: str, max_tokens: int) -> None:
        from tokenizers import Tokenizer

        if not os.path.isfile(path):
            raise ModelLoadError(f"tokenizer file {path} does not exist")
        try:
            whole = Tokenizer.from_file(path)
            cut = Tokenizer.from_file(path)
        except Exception as error:
            raise ModelLoadError(f"cannot read the tokenizer {path}: {error}") from error
        whole.no_truncation()
        whole.no_padding()
        cut.no_padding()
        cut.enable_truncation(max_tokens, strategy="longest_first")
        self._whole = whole
        self._cut = cut
        self.max_tokens = max_tokens

    def encode(self, query: str, texts: Sequence[str], truncate: bool) -> list[PairIds]:
        """The pairs the model sees; InvalidArgument names the first text whose pair is
        too long when ``truncate`` is false."""
        pairs = [(query, text) for text in texts]
        encodings = self._whole.encode_batch(pairs)
        limit = self.max_tokens
        too_long = [i for i, encoding in enumerate(encodings) if len(encoding.ids) > limit]
        if too_long:
            if not truncate:
                index = too_long[0]
                raise InvalidArgument(
                    f"texts[{index}] and the query make {len(encodings[index].ids)} tokens; "
                    f"the rerank model accepts at most {self.max_tokens} (set truncate=true "
                    "to cut them)"
                )
            for index, encoding in zip(
                too_long, self._cut.encode_batch([pairs[i] for i in too_long]), strict=True
            ):
                encodings[index] = encoding
        return [
            PairIds(
                np.asarray(encoding.ids, dtype=np.int64),
                np.asarray(encoding.type_ids, dtype=np.int64),
            )
            for encoding in encodings
        ]


class CrossEncoderScorer:
    """A CrossEncoder on CPU fed padded pairs. ``score_pairs`` from one thread at a time."""

    backend = "torch"

    def __init__(self, model: Any, name: str, tokenizer: PairTokenizer) -> None:
        self._model = model
        self.name = name
        self.tokenizer = tokenizer
        self.max_input_tokens = tokenizer.max_tokens

    def tokenize(self, query: str, texts: Sequence[str], truncate: bool) -> list[PairIds]:
        return self.tokenizer.encode(query, texts, truncate)

    def score_pairs(self, batch: Sequence[PairIds]) -> Vectors:
        """One row ``[score]`` per pair of ``batch``, padded to its longest pair."""
        import torch

        longest = max(len(pair) for pair in batch)
        input_ids = np.zeros((len(batch), longest), dtype=np.int64)
        type_ids = np.zeros((len(batch), longest), dtype=np.int64)
        attention_mask = np.zeros((len(batch), longest), dtype=np.int64)
        for row, pair in enumerate(batch):
            input_ids[row, : len(pair)] = pair.ids
            type_ids[row, : len(pair)] = pair.type_ids
            attention_mask[row, : len(pair)] = 1
        features = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "token_type_ids": torch.from_numpy(type_ids),
        }
        with torch.inference_mode():
            logits = self._model(features)["scores"]
            scores = self._model.activation_fn(logits)
        return np.asarray(scores.float().reshape(len(batch), 1).numpy(), dtype=np.float32)

    def score(self, query: str, texts: Sequence[str], truncate: bool = True) -> list[float]:
        """Scores of ``texts`` against ``query`` in one batch, without the batcher."""
        return [float(row[0]) for row in self.score_pairs(self.tokenize(query, texts, truncate))]


def load_reranker(settings: Settings) -> CrossEncoderScorer | None:
    """The cross-encoder of ``settings.rerank_model`` on the CPU, offline; None when unset."""
    if not settings.rerank_model:
        return None
    os.environ.update(_HF_ENVIRONMENT)
    configure_torch(settings)
    from sentence_transformers import CrossEncoder

    try:
        model = CrossEncoder(settings.rerank_model, device="cpu", local_files_only=True)
    except Exception as error:
        raise ModelLoadError(
            f"cannot load the rerank model from {settings.rerank_model}: {error}"
        ) from error
    if model.num_labels != 1:
        raise ModelLoadError(
            f"the rerank model {settings.rerank_model} has {model.num_labels} labels; a "
            "reranker scores with one"
        )
    model.eval()
    tokenizer = PairTokenizer(
        os.path.join(settings.rerank_model, "tokenizer.json"), int(model.max_seq_length)
    )
    return CrossEncoderScorer(model, settings.rerank_model_name, tokenizer)
