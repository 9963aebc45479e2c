"""Settings of the model server (``AIMESH_`` variables), validated at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from aimesh_common.settings import ServiceSettings

Engine = Literal["openvino-genai", "onnxruntime-genai", "transformers"]
EngineChoice = Literal["auto", "openvino-genai", "onnxruntime-genai", "transformers"]
Precision = Literal["int4", "int8", "fp32"]


class Settings(ServiceSettings):
    """Where the model comes from, which engine runs it and how much work it accepts."""

    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(8090, ge=0, le=65535, description="HTTP port (0 picks a free one).")
    model_path: Path | None = Field(
        None,
        description="A GGUF file, a transformers model directory, or a directory the engine "
        "already reads (genai_config.json); unset: the packaged SmolLM2-135M-Instruct.",
    )
    model_name: str = Field(
        "",
        description="The model id clients send and /v1/models lists; default: the file or "
        "directory name.",
    )
    engine: EngineChoice = Field(
        "auto",
        description="auto (the default): onnxruntime-genai when its CUDA build sees a GPU "
        "(or AIMESH_DEVICE=cuda) or the model is one openvino-genai does not read (an "
        "onnxruntime-genai directory, a transformers directory of another architecture than "
        "Llama), else openvino-genai. openvino-genai: continuous batching on "
        "CPU, the shortest first token and the best concurrency measured; a reply ends at its "
        "first repeated n-gram. onnxruntime-genai (the `onnxruntime` extra: int4/int8 "
        "builds, CUDA; the n-gram guard steers away from repeats), or transformers (the "
        "reference: plain PyTorch generation). The first two convert once into the data dir; "
        "docs/llm-router.md says why.",
    )
    precision: Precision = Field(
        "int4",
        description="Weights of the converted model: for openvino-genai only when converting "
        "a transformers directory (int8: q8_0, else float16; a GGUF file keeps its own "
        "quantization); onnxruntime-genai's builder.",
    )
    data_dir: Path = Field(
        Path(".aimesh"), description="Converted models are kept in <data_dir>/models."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="auto uses CUDA when onnxruntime-genai's CUDA build or torch sees a GPU "
        "(openvino-genai runs on CPU).",
    )
    max_batch_size: int = Field(
        4, ge=1, le=64, description="Requests generated together in one engine step."
    )
    max_queue: int = Field(
        16,
        ge=0,
        le=10_000,
        description="Requests waiting for a batch slot; beyond it a request is answered 429 "
        "at once instead of queuing.",
    )
    context_tokens: int = Field(
        4096, ge=64, le=131_072, description="Longest prompt plus completion in tokens."
    )
    default_max_tokens: int = Field(
        512, ge=1, description="Completion tokens when a request gives no max_tokens."
    )
    repetition_penalty: float = Field(
        1.1,
        ge=1.0,
        le=2.0,
        description="Penalty on tokens already in the sequence (1.0 = off): small models "
        "loop without one.",
    )
    no_repeat_ngram_size: int = Field(
        6,
        ge=0,
        le=32,
        description="Never repeat an n-gram of this many tokens (0 = off). With the penalty "
        "alone SmolLM2-135M still looped on some prompts ('architecture, architecture, ...'); "
        "6 stopped it on every prompt tried. A term longer than this many tokens cannot be "
        "repeated verbatim.",
    )
    threads: int = Field(
        0, ge=0, le=256, description="CPU threads of the engine (0 = the library's choice)."
    )

    def served_name(self) -> str:
        if self.model_name:
            return self.model_name
        if self.model_path is None:
            return "smollm2-135m-instruct"
        return self.model_path.stem if self.model_path.is_file() else self.model_path.name
