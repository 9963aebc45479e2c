"""A tiny real cross-encoder for the tests, built from a config (no hub, no download).

A one-layer ``BertForSequenceClassification`` with one label, random weights from a fixed
seed (a wide ``initializer_range`` so that scores differ visibly between texts), and the
tokenizer of the packaged all-MiniLM-L6-v2 (BERT uncased vocabulary), saved as a
sentence-transformers CrossEncoder directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_tiny_cross_encoder(directory: Path, *, max_tokens: int = 64) -> Path:
    """Write the tiny cross-encoder into ``directory`` and return it."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from aimesh_embedding.config import packaged_model_dir

    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir())
    tokenizer.model_max_length = max_tokens
    torch.manual_seed(1234)
    options: dict[str, Any] = {
        "vocab_size": tokenizer.vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": max_tokens,
        "num_labels": 1,
        "initializer_range": 0.5,
    }
    BertForSequenceClassification(BertConfig(**options)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
