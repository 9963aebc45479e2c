"""Settings of the gateway, read from the environment (``AIMESH_`` prefix).

Secrets (the bootstrap admin API key and the JWT secret) come from the environment or from a
mounted file (``AIMESH_ADMIN_API_KEY_FILE``, ``AIMESH_JWT_SECRET_FILE``) and are kept as
``SecretStr`` so they never show up in a repr, a log line or a validation error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import SettingsConfigDict

from aimesh_common.settings import ServiceSettings, service_addr

MIN_JWT_SECRET_BYTES = 32
MIN_ADMIN_KEY_CHARS = 16


def _settings_error(field: str, message: str) -> ValidationError:
    """A ValidationError located at ``field`` so the start-up message names its variable."""
    detail = InitErrorDetails(
        type=PydanticCustomError("value_error", message), loc=(field,), input=None
    )
    return ValidationError.from_exception_data("Settings", [detail])


def _read_secret_file(field: str, path: Path) -> SecretStr:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise _settings_error(field, f"cannot read the secret file: {error.strerror}") from None
    if not value:
        raise _settings_error(field, "the secret file is empty")
    return SecretStr(value)


class Settings(ServiceSettings):
    """Configuration of aimesh-gateway."""

    # hide_input_in_errors: a rejected secret must not appear in the exception text.
    model_config = SettingsConfigDict(
        validate_by_name=True, validate_by_alias=True, hide_input_in_errors=True
    )

    host: str = Field("0.0.0.0", description="Address the HTTP server binds.")  # noqa: S104
    port: int = Field(8000, ge=0, le=65535, description="HTTP port; 0 picks a free one.")

    llm_router_service_addr: str = service_addr("LLM_ROUTER_SERVICE_ADDR", "localhost:50053")
    retrieval_service_addr: str = service_addr("RETRIEVAL_SERVICE_ADDR", "localhost:50052")
    embedding_service_addr: str = service_addr("EMBEDDING_SERVICE_ADDR", "localhost:50051")

    admin_api_key: SecretStr | None = Field(
        None,
        description="Bootstrap admin API key (role admin in admin_tenant). Unset disables it.",
    )
    admin_api_key_file: Path | None = Field(
        None, description="File holding the admin API key (a mounted Kubernetes secret)."
    )
    admin_tenant: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        description="Tenant the admin API key acts for.",
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description=f"HS256 secret of accepted JWTs, at least {MIN_JWT_SECRET_BYTES} bytes. "
        "Unset disables JWT authentication.",
    )
    jwt_secret_file: Path | None = Field(
        None, description="File holding the JWT secret (a mounted Kubernetes secret)."
    )
    jwt_audience: str = Field("aimesh", min_length=1, description="Required `aud` of JWTs.")
    jwt_tenant_claim: str = Field("tenant_id", min_length=1, description="Claim naming the tenant.")
    jwt_roles_claim: str = Field("roles", min_length=1, description="Claim listing the roles.")

    max_body_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond)."
    )
    request_timeout_seconds: float = Field(
        60.0, gt=0, le=3600, description="Deadline of each gRPC call to a backend."
    )
    readiness_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="How long /readyz waits for each backend's health check."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed by CORS (JSON list). Empty disables CORS. Credentials "
        "(cookies) are never allowed: clients send a bearer token.",
    )

    @field_validator("admin_api_key")
    @classmethod
    def _admin_key_strength(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_ADMIN_KEY_CHARS:
            raise ValueError(f"must be at least {MIN_ADMIN_KEY_CHARS} characters")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret_strength(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_JWT_SECRET_BYTES} bytes")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"origin {origin!r} must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _resolve_secret_files(self) -> Self:
        # The model is frozen; secret files are resolved once, here.
        if self.admin_api_key is None and self.admin_api_key_file is not None:
            key = _read_secret_file("admin_api_key_file", self.admin_api_key_file)
            if len(key.get_secret_value()) < MIN_ADMIN_KEY_CHARS:
                raise _settings_error(
                    "admin_api_key_file",
                    f"the key must be at least {MIN_ADMIN_KEY_CHARS} characters",
                )
            object.__setattr__(self, "admin_api_key", key)
        if self.jwt_secret is None and self.jwt_secret_file is not None:
            secret = _read_secret_file("jwt_secret_file", self.jwt_secret_file)
            if len(secret.get_secret_value().encode()) < MIN_JWT_SECRET_BYTES:
                raise _settings_error(
                    "jwt_secret_file", f"the secret must be at least {MIN_JWT_SECRET_BYTES} bytes"
                )
            object.__setattr__(self, "jwt_secret", secret)
        return self
