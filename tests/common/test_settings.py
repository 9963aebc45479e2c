"""Settings base: prefix, address aliases, readable validation errors, exit status."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aimesh_common.settings import (
    GrpcServiceSettings,
    format_validation_error,
    load_settings,
    service_addr,
)


class _Settings(GrpcServiceSettings):
    port: int = 50051
    embedding_service_addr: str = service_addr("EMBEDDING_SERVICE_ADDR", "localhost:50051")
    jwt_secret: str | None = None


def test_prefix_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMESH_PORT", "6000")
    settings = _Settings()
    assert settings.port == 6000
    assert settings.embedding_service_addr == "localhost:50051"
    assert settings.log_level == "INFO"


def test_service_addr_reads_unprefixed_and_prefixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_SERVICE_ADDR", "embedding:1234")
    assert _Settings().embedding_service_addr == "embedding:1234"
    monkeypatch.delenv("EMBEDDING_SERVICE_ADDR")
    monkeypatch.setenv("AIMESH_EMBEDDING_SERVICE_ADDR", "other:1")
    assert _Settings().embedding_service_addr == "other:1"


def test_error_names_the_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMESH_PORT", "not-a-port")
    monkeypatch.setenv("AIMESH_LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError) as caught:
        _Settings()
    text = format_validation_error(caught.value)
    assert "AIMESH_PORT" in text
    assert "'not-a-port'" in text
    assert "AIMESH_LOG_LEVEL" in text


def test_secret_values_are_not_echoed() -> None:
    class _Strict(GrpcServiceSettings):
        jwt_secret: int

    with pytest.raises(ValidationError) as caught:
        _Strict(jwt_secret="hunter2-very-secret")
    text = format_validation_error(caught.value)
    assert "AIMESH_JWT_SECRET" in text
    assert "hunter2" not in text


def test_load_settings_exits_2_with_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIMESH_GRACE_SECONDS", "-1")
    with pytest.raises(SystemExit) as caught:
        load_settings(_Settings)
    assert caught.value.code == 2
    assert "AIMESH_GRACE_SECONDS" in capsys.readouterr().err
