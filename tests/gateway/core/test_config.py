"""Settings: defaults, environment names, secret strength and secret files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from aimesh_common.settings import format_validation_error
from aimesh_gateway.core.config import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AIMESH_PORT",
        "AIMESH_HOST",
        "AIMESH_ADMIN_API_KEY",
        "AIMESH_JWT_SECRET",
        "LLM_ROUTER_SERVICE_ADDR",
        "RETRIEVAL_SERVICE_ADDR",
        "EMBEDDING_SERVICE_ADDR",
        "AIMESH_CORS_ORIGINS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = Settings()
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert settings.llm_router_service_addr == "localhost:50053"
    assert settings.retrieval_service_addr == "localhost:50052"
    assert settings.embedding_service_addr == "localhost:50051"
    assert settings.admin_api_key is None
    assert settings.jwt_secret is None
    assert settings.admin_tenant == "default"
    assert (settings.jwt_audience, settings.jwt_tenant_claim, settings.jwt_roles_claim) == (
        "aimesh",
        "tenant_id",
        "roles",
    )
    assert settings.max_body_bytes == 5 * 1024 * 1024
    assert settings.request_timeout_seconds == 60
    assert settings.cors_origins == []


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMESH_PORT", "9000")
    monkeypatch.setenv("LLM_ROUTER_SERVICE_ADDR", "router:1")
    monkeypatch.setenv("AIMESH_RETRIEVAL_SERVICE_ADDR", "retrieval:2")
    monkeypatch.setenv("EMBEDDING_SERVICE_ADDR", "embedding:3")
    monkeypatch.setenv("AIMESH_ADMIN_API_KEY", "k" * 20)
    monkeypatch.setenv("AIMESH_JWT_SECRET", "s" * 32)
    monkeypatch.setenv("AIMESH_CORS_ORIGINS", '["https://app.example"]')
    settings = Settings()
    assert settings.port == 9000
    assert settings.llm_router_service_addr == "router:1"
    assert settings.retrieval_service_addr == "retrieval:2"
    assert settings.embedding_service_addr == "embedding:3"
    assert settings.admin_api_key is not None
    assert settings.admin_api_key.get_secret_value() == "k" * 20
    assert settings.cors_origins == ["https://app.example"]


def test_short_jwt_secret_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMESH_JWT_SECRET", "short-secret-31-bytes-long-xxxx")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = format_validation_error(caught.value)
    assert "AIMESH_JWT_SECRET" in message
    assert "32 bytes" in message
    assert "short-secret" not in message
    assert "short-secret" not in str(caught.value)


def test_short_admin_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="16 characters"):
        Settings(admin_api_key="tooshort")


def test_secrets_from_files(tmp_path: Path) -> None:
    key_file, secret_file = tmp_path / "key", tmp_path / "secret"
    key_file.write_text("am_from_file_0123456789\n")
    secret_file.write_text("f" * 40 + "\n")
    settings = Settings(admin_api_key_file=key_file, jwt_secret_file=secret_file)
    assert settings.admin_api_key is not None
    assert settings.jwt_secret is not None
    assert settings.admin_api_key.get_secret_value() == "am_from_file_0123456789"
    assert settings.jwt_secret.get_secret_value() == "f" * 40
    assert "am_from_file" not in repr(settings)


@pytest.mark.parametrize(
    ("content", "field", "message"),
    [
        (None, "jwt_secret_file", "cannot read"),
        ("", "jwt_secret_file", "empty"),
        ("short", "jwt_secret_file", "32 bytes"),
    ],
)
def test_bad_secret_files_are_refused(
    tmp_path: Path, content: str | None, field: str, message: str
) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValidationError) as caught:
        Settings(jwt_secret_file=path)
    text = format_validation_error(caught.value)
    assert field.upper() in text
    assert message in text


def test_cors_origins_must_be_urls() -> None:
    with pytest.raises(ValidationError, match="http"):
        Settings(cors_origins=["app.example"])
    assert Settings(cors_origins=["*"]).cors_origins == ["*"]


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]
