"""Settings: provider selection, key sources, and keys never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimesh_common.settings import load_settings
from aimesh_llm_router.config import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "AIMESH_OPENAI_API_KEY",
        "AIMESH_OPENAI_API_KEY_FILE",
        "AIMESH_LLM_PROVIDER",
        "AIMESH_OPENAI_BASE_URL",
        "AIMESH_CONTEXT_WINDOW",
        "AIMESH_PORT",
        "AIMESH_METRICS_PORT",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = Settings()
    assert settings.port == 50053
    assert settings.metrics_port == 9103
    assert settings.embedding_service_addr == "localhost:50051"
    assert settings.retrieval_service_addr == "localhost:50052"
    assert settings.openai_model == "gpt-4o-mini"
    assert settings.request_timeout_seconds == 60
    assert settings.max_tokens == 1024


def test_auto_picks_local_without_a_key() -> None:
    settings = Settings()
    assert settings.provider == "local"
    assert settings.effective_context_window == 4096


def test_auto_picks_openai_when_openai_api_key_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key")
    settings = Settings()
    assert settings.provider == "openai"
    assert settings.effective_context_window == 128_000
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-env-key"


def test_aimesh_prefixed_key_and_backend_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMESH_OPENAI_API_KEY", "sk-prefixed")
    monkeypatch.setenv("EMBEDDING_SERVICE_ADDR", "embedding:6000")
    monkeypatch.setenv("AIMESH_RETRIEVAL_SERVICE_ADDR", "retrieval:6001")
    settings = Settings()
    assert settings.provider == "openai"
    assert settings.embedding_service_addr == "embedding:6000"
    assert settings.retrieval_service_addr == "retrieval:6001"


def test_key_from_a_mounted_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n")
    monkeypatch.setenv("AIMESH_OPENAI_API_KEY_FILE", str(key_file))
    settings = Settings()
    assert settings.provider == "openai"
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-from-file"


def test_an_empty_key_variable_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "  ")
    settings = Settings()
    assert settings.openai_api_key is None
    assert settings.provider == "local"


def test_explicit_local_wins_over_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key")
    monkeypatch.setenv("AIMESH_LLM_PROVIDER", "local")
    assert Settings().provider == "local"


def test_context_window_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMESH_CONTEXT_WINDOW", "8192")
    assert Settings().effective_context_window == 8192


def test_keyless_openai_compatible_server_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMESH_LLM_PROVIDER", "openai")
    monkeypatch.setenv("AIMESH_OPENAI_BASE_URL", "http://vllm:8000/v1")
    settings = Settings()
    assert settings.provider == "openai"
    assert settings.openai_api_key is None


def run_load(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        load_settings(Settings)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_openai_without_key_fails_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIMESH_LLM_PROVIDER", "openai")
    err = run_load(capsys)
    assert "AIMESH_LLM_PROVIDER" in err
    assert "OPENAI_API_KEY" in err


def test_unreadable_key_file_fails_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIMESH_OPENAI_API_KEY_FILE", str(tmp_path / "missing"))
    assert "AIMESH_OPENAI_API_KEY_FILE: cannot read the key file" in run_load(capsys)


def test_empty_key_file_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("  \n")
    monkeypatch.setenv("AIMESH_OPENAI_API_KEY_FILE", str(key_file))
    assert "the key file is empty" in run_load(capsys)


def test_key_never_appears_in_repr_or_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-value")
    assert "sk-very-secret-value" not in repr(Settings())
    monkeypatch.setenv("AIMESH_REQUEST_TIMEOUT_SECONDS", "-1")
    err = run_load(capsys)
    assert "AIMESH_REQUEST_TIMEOUT_SECONDS" in err
    assert "sk-very-secret-value" not in err
