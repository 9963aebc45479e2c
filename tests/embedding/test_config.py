"""Settings: defaults, the packaged model directory and readable validation errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from aimesh_common.settings import format_validation_error
from aimesh_embedding.config import PACKAGED_MODEL_NAME, Settings, packaged_model_dir


def test_defaults_serve_the_packaged_model(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIMESH_EMBEDDING_MODEL", "AIMESH_EMBEDDING_MODEL_NAME", "AIMESH_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.port == 50051
    assert settings.metrics_port == 9101
    assert settings.max_inputs_per_request == 256
    assert settings.max_input_chars == 32768
    assert settings.embedding_model == os.path.abspath(packaged_model_dir())
    assert os.path.isfile(os.path.join(settings.embedding_model, "modules.json"))
    assert settings.embedding_model_name == PACKAGED_MODEL_NAME == "all-MiniLM-L6-v2"


def test_environment_selects_another_model_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model_dir = tmp_path / "my-encoder"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    monkeypatch.setenv("AIMESH_EMBEDDING_MODEL", f"{model_dir}/")
    monkeypatch.delenv("AIMESH_EMBEDDING_MODEL_NAME", raising=False)
    settings = Settings()
    assert settings.embedding_model == str(model_dir)
    assert settings.embedding_model_name == "my-encoder"

    monkeypatch.setenv("AIMESH_EMBEDDING_MODEL_NAME", "team-encoder-v2")
    assert Settings().embedding_model_name == "team-encoder-v2"


def test_a_link_to_the_packaged_model_keeps_its_name(tmp_path: Path) -> None:
    link = tmp_path / "linked"
    link.symlink_to(packaged_model_dir(), target_is_directory=True)
    assert Settings(embedding_model=str(link)).embedding_model_name == PACKAGED_MODEL_NAME


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing", "does not exist"),
        ("not-a-model", "is not a sentence-transformers model directory"),
    ],
)
def test_bad_model_directory_is_a_readable_setting_error(
    tmp_path: Path, setup: str, expected: str
) -> None:
    path = tmp_path / setup
    if setup == "not-a-model":
        path.mkdir()
        (path / "notes.txt").write_text("no model here")
    with pytest.raises(ValidationError) as caught:
        Settings(embedding_model=str(path))
    message = format_validation_error(caught.value)
    assert "AIMESH_EMBEDDING_MODEL:" in message
    assert str(path) in message
    assert expected in message
    # The derived name must not add a second, confusing error.
    assert "AIMESH_EMBEDDING_MODEL_NAME" not in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_inputs_per_request", 0), ("max_input_chars", 0), ("port", 70000)],
)
def test_limits_are_validated(monkeypatch: pytest.MonkeyPatch, field: str, value: int) -> None:
    monkeypatch.setenv(f"AIMESH_{field.upper()}", str(value))
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert f"AIMESH_{field.upper()}" in format_validation_error(caught.value)


def test_batching_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.embedding_backend == "torch"
    assert settings.embedding_max_batch_tokens == 4096
    assert settings.embedding_max_queue_inputs == 4096
    monkeypatch.setenv("AIMESH_EMBEDDING_MAX_BATCH_TOKENS", "2048")
    monkeypatch.setenv("AIMESH_EMBEDDING_MAX_WAIT_MS", "0")
    monkeypatch.setenv("AIMESH_EMBEDDING_MAX_QUEUE_INPUTS", "512")
    changed = Settings()
    assert changed.embedding_max_batch_tokens == 2048
    assert changed.embedding_max_wait_ms == 0
    assert changed.embedding_max_queue_inputs == 512


def test_memory_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.embedding_malloc_mmap_threshold_kib == 128
    assert settings.embedding_onnx_shrink_arena is True
    monkeypatch.setenv("AIMESH_EMBEDDING_MALLOC_MMAP_THRESHOLD_KIB", "0")
    monkeypatch.setenv("AIMESH_EMBEDDING_ONNX_SHRINK_ARENA", "false")
    changed = Settings()
    assert changed.embedding_malloc_mmap_threshold_kib == 0
    assert changed.embedding_onnx_shrink_arena is False


@pytest.mark.parametrize("value", ["-1", "32769"])
def test_mmap_threshold_is_validated(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AIMESH_EMBEDDING_MALLOC_MMAP_THRESHOLD_KIB", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "AIMESH_EMBEDDING_MALLOC_MMAP_THRESHOLD_KIB" in format_validation_error(caught.value)


def test_queue_must_hold_one_full_call() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(max_inputs_per_request=300, embedding_max_queue_inputs=200)
    message = format_validation_error(caught.value)
    assert "AIMESH_EMBEDDING_MAX_QUEUE_INPUTS (200) must be at least" in message


def test_onnx_backend_needs_no_torch_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIMESH_EMBEDDING_BACKEND", "onnx")
    monkeypatch.setenv("AIMESH_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.embedding_model == ""
    assert settings.onnx_dir() == str(tmp_path / "models" / "all-MiniLM-L6-v2-onnx")
    monkeypatch.setenv("AIMESH_EMBEDDING_BACKEND", "tensorflow")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "AIMESH_EMBEDDING_BACKEND" in format_validation_error(caught.value)
