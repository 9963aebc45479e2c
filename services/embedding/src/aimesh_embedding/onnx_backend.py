"""The ``onnx`` backend: ONNX Runtime on the model exported by ``make embedding-onnx``.

Imports onnxruntime, tokenizers and numpy only, never torch or sentence-transformers: an image
that serves this backend installs neither. The export directory is self-contained:

* ``model.onnx`` (fp32) and ``model_int8.onnx`` (dynamic, per-channel int8 quantization),
  both mapping (input_ids, attention_mask, token_type_ids) to the mean-pooled embedding;
* ``tokenizer.json``, the model's own tokenizer;
* ``aimesh_onnx.json``: the model's name, dimension and maximum input tokens.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from aimesh_embedding.config import Settings
from aimesh_embedding.model import BaseEncoder, ModelLoadError, TextTokenizer, TokenIds, Vectors

METADATA_FILE = "aimesh_onnx.json"
MODEL_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
# Run option: after the run, free the CPU arena's chunks beyond its first one.
ARENA_SHRINKAGE = "memory.enable_memory_arena_shrinkage"


class OnnxEncoder(BaseEncoder):
    """One ONNX Runtime CPU session. ``encode_ids`` from one thread at a time."""

    backend = "onnx"

    def __init__(
        self,
        session: Any,
        tokenizer: TextTokenizer,
        name: str,
        dimension: int,
        max_input_tokens: int,
        variant: str,
        run_options: Any = None,
    ) -> None:
        super().__init__(tokenizer, name, dimension, max_input_tokens)
        self._session = session
        self._run_options = run_options
        self._inputs = {item.name for item in session.get_inputs()}
        self.variant = variant

    def _forward(self, input_ids: TokenIds, attention_mask: TokenIds) -> Vectors:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        (output,) = self._session.run(None, feed, self._run_options)
        return np.asarray(output, dtype=np.float32)


def read_metadata(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        raise ModelLoadError(
            f"{directory} holds no ONNX export ({METADATA_FILE} is missing); run "
            "`make embedding-onnx` or set AIMESH_EMBEDDING_ONNX_DIR"
        )
    with open(path, encoding="utf-8") as file:
        metadata: dict[str, Any] = json.load(file)
    return metadata


def load_onnx_encoder(settings: Settings) -> OnnxEncoder:
    """Open the export in ``settings.onnx_dir()`` with the configured variant."""
    import onnxruntime  # type: ignore[import-untyped]

    directory = settings.onnx_dir()
    metadata = read_metadata(directory)
    variant = settings.embedding_onnx_variant
    model_path = os.path.join(directory, MODEL_FILES[variant])
    if not os.path.isfile(model_path):
        raise ModelLoadError(f"the {variant} ONNX model {model_path} does not exist")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # The arena and the memory patterns (one cached plan per input shape) both keep memory
    # per batch shape, and the batcher makes many shapes. A shrunk arena's chunks go back to
    # malloc, which unmaps them (the fixed mmap threshold of memory.py).
    shrink = settings.embedding_onnx_shrink_arena
    options.enable_mem_pattern = not shrink
    run_options = onnxruntime.RunOptions()
    if shrink:
        run_options.add_run_config_entry(ARENA_SHRINKAGE, "cpu:0")
    try:
        session = onnxruntime.InferenceSession(
            model_path, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:
        raise ModelLoadError(f"cannot load the ONNX model {model_path}: {error}") from error
    return OnnxEncoder(
        session,
        TextTokenizer(os.path.join(directory, "tokenizer.json")),
        name=settings.embedding_model_name or str(metadata["name"]),
        dimension=int(metadata["dimension"]),
        max_input_tokens=int(metadata["max_input_tokens"]),
        variant=variant,
        run_options=run_options,
    )
