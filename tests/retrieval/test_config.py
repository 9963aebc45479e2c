"""Retrieval settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from aimesh_common.settings import format_validation_error
from aimesh_retrieval.config import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "EMBEDDING_SERVICE_ADDR",
        "AIMESH_EMBEDDING_SERVICE_ADDR",
        "AIMESH_MILVUS_URI",
        "AIMESH_DATA_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.port == 50052
    assert settings.metrics_port == 9102
    assert settings.embedding_service_addr == "localhost:50051"
    assert (settings.chunk_size, settings.chunk_overlap) == (200, 32)
    assert settings.max_documents_per_request == 100
    assert settings.max_document_chars == 1_000_000
    assert settings.embed_batch_size == 64
    assert not settings.milvus_is_server
    assert settings.resolved_milvus_uri == str(Path(".aimesh") / "milvus.db")


def test_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMBEDDING_SERVICE_ADDR", "embedding:50051")
    monkeypatch.setenv("AIMESH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AIMESH_MILVUS_URI", "http://milvus:19530")
    monkeypatch.setenv("AIMESH_MILVUS_TOKEN", "root:Milvus")
    settings = Settings()
    assert settings.embedding_service_addr == "embedding:50051"
    assert settings.data_dir == tmp_path
    assert settings.milvus_is_server
    assert settings.resolved_milvus_uri == "http://milvus:19530"
    assert settings.milvus_token is not None
    assert settings.milvus_token.get_secret_value() == "root:Milvus"
    assert "root:Milvus" not in repr(settings)


def test_lite_file_under_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_milvus_uri == str(tmp_path / "milvus.db")


def test_overlap_must_be_below_size() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(chunk_size=100, chunk_overlap=100)
    assert "chunk_overlap must be smaller than chunk_size" in format_validation_error(caught.value)


def test_token_is_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMESH_MILVUS_TOKEN", "s3cr3t-value")
    with pytest.raises(ValidationError) as caught:
        Settings(chunk_size=100, chunk_overlap=200)
    assert "s3cr3t-value" not in format_validation_error(caught.value)


def test_search_consistency_defaults_to_session_and_rejects_unknown_levels() -> None:
    assert Settings().milvus_search_consistency == "Session"
    assert Settings(milvus_search_consistency="Strong").milvus_search_consistency == "Strong"
    with pytest.raises(ValidationError):
        Settings.model_validate({"milvus_search_consistency": "Sometimes"})


def test_malloc_threshold_default_environment_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().malloc_mmap_threshold_kib == 128
    monkeypatch.setenv("AIMESH_MALLOC_MMAP_THRESHOLD_KIB", "0")
    assert Settings().malloc_mmap_threshold_kib == 0
    for value in ("-1", "32769"):
        monkeypatch.setenv("AIMESH_MALLOC_MMAP_THRESHOLD_KIB", value)
        with pytest.raises(ValidationError) as caught:
            Settings()
        assert "AIMESH_MALLOC_MMAP_THRESHOLD_KIB" in format_validation_error(caught.value)


def test_blas_threads_default_one_environment_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().blas_threads == 1
    monkeypatch.setenv("AIMESH_BLAS_THREADS", "0")
    assert Settings().blas_threads == 0
    monkeypatch.setenv("AIMESH_BLAS_THREADS", "-1")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "AIMESH_BLAS_THREADS" in format_validation_error(caught.value)


def test_arrow_memory_pool_default_system_environment_and_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().arrow_memory_pool == "system"
    monkeypatch.setenv("AIMESH_ARROW_MEMORY_POOL", "mimalloc")
    assert Settings().arrow_memory_pool == "mimalloc"
    monkeypatch.setenv("AIMESH_ARROW_MEMORY_POOL", "tcmalloc")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "AIMESH_ARROW_MEMORY_POOL" in format_validation_error(caught.value)
