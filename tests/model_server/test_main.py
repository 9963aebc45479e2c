"""The model server's start: an engine whose library is not installed is a clear error."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from aimesh_model_server import main
from aimesh_model_server.config import Settings
from aimesh_model_server.prepare import ModelSourceError


def test_onnxruntime_without_its_extra_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "onnxruntime_genai" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    settings = Settings(engine="onnxruntime-genai", model_path=tmp_path, data_dir=tmp_path)
    with pytest.raises(ModelSourceError, match=r"aimesh-model-server\[onnxruntime\]"):
        main.build_engine(settings)


def test_auto_is_openvino_on_cpu_and_onnxruntime_where_cuda_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert Settings().engine == "auto"
    # This machine has no GPU: onnxruntime-genai (CPU build) sees none.
    assert main.chosen_engine(Settings(data_dir=tmp_path)) == "openvino-genai"
    assert main.chosen_engine(Settings(device="cuda")) == "onnxruntime-genai"
    assert main.chosen_engine(Settings(device="cpu")) == "openvino-genai"
    for named in ("openvino-genai", "onnxruntime-genai", "transformers"):
        assert main.chosen_engine(Settings(engine=named, device="cuda")) == named
    # Where onnxruntime-genai's CUDA build sees a GPU (no GPU here: its answer stands in).
    monkeypatch.setattr(main, "_ort_sees_cuda", lambda: True)
    assert main.chosen_engine(Settings()) == "onnxruntime-genai"
    assert main.chosen_engine(Settings(device="cpu")) == "openvino-genai"


def test_the_engine_setting_reads_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMESH_ENGINE", "onnxruntime-genai")
    assert Settings().engine == "onnxruntime-genai"
    monkeypatch.setenv("AIMESH_ENGINE", "llama")
    with pytest.raises(ValueError, match="engine"):
        Settings()


def test_auto_takes_onnxruntime_for_models_openvino_does_not_read(
    tiny_hf_dir: Path, tiny_engine_dir: Path, tiny_openvino_dir: Path, tmp_path: Path
) -> None:
    """A model the user names decides the CPU engine where openvino-genai cannot read it:
    an onnxruntime-genai directory, or a transformers directory of another architecture."""

    def chosen(path: Path | None) -> str:
        return main.chosen_engine(Settings(model_path=path, data_dir=tmp_path))

    assert chosen(None) == "openvino-genai"  # the packaged GGUF
    assert chosen(tiny_hf_dir) == "openvino-genai"  # Llama: written as GGUF first
    assert chosen(tiny_openvino_dir) == "openvino-genai"
    assert chosen(tiny_engine_dir) == "onnxruntime-genai"
    qwen = tmp_path / "qwen"
    qwen.mkdir()
    (qwen / "config.json").write_text('{"model_type": "qwen2"}')
    assert chosen(qwen) == "onnxruntime-genai"
    gguf_file = tmp_path / "model.gguf"
    gguf_file.write_bytes(b"GGUF")
    assert chosen(gguf_file) == "openvino-genai"
    # A path that does not exist is left to resolve(), which says so.
    assert chosen(tmp_path / "missing") == "openvino-genai"
