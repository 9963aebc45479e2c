"""Settings of the gateway, read from the environment (``AIMESH_`` prefix).

Secrets (the bootstrap admin API key and the JWT secret) come from the environment or from a
mounted file (``AIMESH_ADMIN_API_KEY_FILE``, ``AIMESH_JWT_SECRET_FILE``) and are kept as
``SecretStr`` so they never show up in a repr, a log line or a validation error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import SettingsConfigDict

from aimesh_common.settings import ServiceSettings, service_addr

MIN_JWT_SECRET_BYTES = 32
OidcAlgorithm = Literal["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
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
    jwt_previous_secret: SecretStr | None = Field(
        None,
        description="The HS256 secret being rotated out: tokens it signed stay valid while "
        "it is set, so AIMESH_JWT_SECRET can change without downtime. New tokens always use "
        "AIMESH_JWT_SECRET.",
    )
    jwt_audience: str = Field("aimesh", min_length=1, description="Required `aud` of JWTs.")
    jwt_issuers: list[str] = Field(
        default_factory=list,
        description="Accepted `iss` of HS256 tokens besides `token_issuer` (the gateway's own), "
        "e.g. an identity provider that signs with AIMESH_JWT_SECRET.",
    )
    jwt_tenant_claim: str = Field("tenant_id", min_length=1, description="Claim naming the tenant.")
    jwt_roles_claim: str = Field("roles", min_length=1, description="Claim listing the roles.")

    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="uvicorn worker processes; 0 picks one per core (max 4) when "
        "AIMESH_REDIS_URL is set, else 1.",
    )
    keep_alive_seconds: int = Field(
        75,
        ge=1,
        le=3600,
        description="How long an idle HTTP connection is kept open (uvicorn's "
        "timeout_keep_alive). Above the idle timeout of the clients' pools (httpx 5 s) and of "
        "load balancers (commonly 60 s), so the gateway never closes a connection at the "
        "moment a client reuses it; uvicorn's own 5 s equals httpx's, and a 2-hour soak lost "
        "one request to that race (issue 28).",
    )
    data_dir: Path = Field(
        Path(".aimesh"), description="Directory of local data (the default SQLite database)."
    )
    database_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy async URL, e.g. postgresql+asyncpg://user:pw@host/db. Unset: "
        "SQLite at <data_dir>/gateway.db.",
    )
    migrate_on_start: bool = Field(
        True, description="Apply the database migrations when the gateway starts."
    )

    api_key_cache_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="How long a verified API key is trusted without a database read; a key "
        "revoked elsewhere stops working within this time.",
    )
    oidc_issuer: str | None = Field(
        None,
        description="OIDC issuer URL; its discovery document and JWKS verify RS256/ES256 JWTs. "
        "Unset disables OIDC.",
    )
    oidc_audience: str | None = Field(
        None, description="Required `aud` of OIDC tokens (default: jwt_audience)."
    )
    oidc_algorithms: list[OidcAlgorithm] = Field(
        default_factory=lambda: list[OidcAlgorithm](["RS256", "ES256"]),
        description="Asymmetric algorithms accepted from the OIDC issuer.",
    )
    oidc_jwks_cache_seconds: float = Field(
        300.0, gt=0, description="How long fetched signing keys are trusted before a refetch."
    )
    oidc_leeway_seconds: int = Field(
        30, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat."
    )
    access_token_ttl_seconds: int = Field(
        900, ge=60, le=86400, description="Lifetime of access tokens from /v1/auth/token."
    )
    refresh_token_ttl_seconds: int = Field(
        7 * 86400, ge=300, description="Lifetime of refresh tokens from /v1/auth/token."
    )
    token_issuer: str = Field(
        "aimesh-gateway", min_length=1, description="`iss` of the tokens the gateway issues."
    )

    redis_url: SecretStr | None = Field(
        None,
        description="Redis URL for rate limits and the response cache shared by replicas. "
        "Unset: in-process limiter and cache (one process only).",
    )
    rate_limit_rpm: int = Field(
        0, ge=0, description="Default requests per minute per API key or user (0: unlimited)."
    )
    rate_limit_tpm: int = Field(
        0, ge=0, description="Default tokens per minute per API key or user (0: unlimited)."
    )
    tenant_rate_limit_rpm: int = Field(
        0, ge=0, description="Default requests per minute per tenant (0: unlimited)."
    )
    tenant_rate_limit_tpm: int = Field(
        0, ge=0, description="Default tokens per minute per tenant (0: unlimited)."
    )
    rate_limit_lease: int = Field(
        64,
        ge=0,
        le=1024,
        description="With Redis: at most this many requests a replica reserves ahead for one "
        "caller while every limit is far off, admitted without a Redis call for up to 1 s "
        "(the unused ones are given back). Replicas together never pass a limit either way; "
        "0: one Redis call per request.",
    )
    rate_limit_redis_failure: Literal["open", "closed"] = Field(
        "open",
        description="When Redis is unreachable: open admits requests, closed answers 503.",
    )
    budget_redis_failure: Literal["open", "closed"] = Field(
        "closed",
        description="When Redis is unreachable and a hard budget applies: closed answers 503 "
        "(no call can overrun it), open lets calls through uncounted (their usage records "
        "still count once Redis is back).",
    )
    budget_cache_seconds: float = Field(
        5.0, ge=0, le=300, description="How long a process caches a tenant's budget list."
    )
    budget_prompt_margin: float = Field(
        1.1,
        ge=1.0,
        le=4.0,
        description="Factor on the counted prompt tokens of a reservation (upstream "
        "tokenizers differ from cl100k_base).",
    )
    budget_alert_thresholds: list[int] = Field(
        default_factory=lambda: [50, 80, 100],
        description="Percentages of a budget at which an alert is counted and the webhook "
        "called (JSON list).",
    )
    budget_webhook_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Optional URL that receives a signed POST when a budget crosses a threshold.",
    )
    budget_webhook_secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key of the webhook's X-Aimesh-Signature header (needed with "
        "the URL).",
    )
    redis_key_prefix: str = Field(
        "aimesh:", description="Prefix of every Redis key the gateway writes."
    )

    cache_ttl_seconds: float = Field(
        300.0,
        ge=0,
        description="Lifetime of cached deterministic answers (search, embeddings, "
        "temperature-0 chat); 0 disables the cache.",
    )
    cache_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Most bytes the in-process response cache holds (keys, values and about "
        "230 bytes per entry); least recently used entries go first. Not used with Redis, "
        "whose own maxmemory applies.",
    )
    cache_max_entry_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description="A response larger than this is not cached (in-process or Redis).",
    )

    usage_retention_days: int = Field(
        400,
        ge=92,
        le=36_500,
        description="Usage records older than this are deleted (checked every 6 hours). At "
        "least 92 days: budgets are rebuilt from the records of their window (up to a month, "
        "or a rolling window of up to 90 days).",
    )

    files_max_tenant_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1,
        description="Bytes a tenant's files of the OpenAI files API (POST /v1/files) may hold "
        "together, in the gateway's database; one file holds at most the upload limit.",
    )

    rag_sources_in_content: bool = Field(
        True,
        description='A "rag:<collection>" chat completion appends its numbered sources to '
        "the content as text (for chat UIs that show only content); the annotations carry "
        "them either way. A request can override it (rag.sources_in_content).",
    )

    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector base URL (e.g. http://otel-collector:4318); traces "
        "are off when unset.",
    )

    max_body_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond)."
    )
    request_timeout_seconds: float = Field(
        60.0, gt=0, le=3600, description="Deadline of each gRPC call to a backend."
    )
    http_timeout_seconds: float = Field(
        90.0,
        gt=0,
        le=3600,
        description="Longest wait for a response to start (504 beyond); streams that have "
        "started are not cut.",
    )
    readiness_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="How long /readyz waits for each backend's health check."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed by CORS (JSON list). Empty disables CORS. Credentials "
        "(cookies) are never allowed: clients send a bearer token.",
    )

    web_dir: Path | None = Field(
        None,
        description="Built web app (a dist/ folder with index.html) served at / with SPA "
        "fallback; API, docs and probe paths are never shadowed. Unset: no static serving.",
    )

    def resolved_workers(self) -> int:
        """Worker processes: as configured, else one per core (at most 4) when Redis makes
        limits and cache shared, else 1 (in-process limits hold only within one process)."""
        if self.workers > 0:
            return self.workers
        if self.redis_url is None:
            return 1
        return max(1, min(4, os.cpu_count() or 1))

    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return default_database_url(self.data_dir)

    @field_validator("admin_api_key")
    @classmethod
    def _admin_key_strength(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_ADMIN_KEY_CHARS:
            raise ValueError(f"must be at least {MIN_ADMIN_KEY_CHARS} characters")
        return value

    @field_validator("jwt_secret", "jwt_previous_secret")
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

    @field_validator("budget_alert_thresholds")
    @classmethod
    def _thresholds(cls, value: list[int]) -> list[int]:
        if any(not 1 <= threshold <= 1000 for threshold in value):
            raise ValueError("every threshold must be a percentage between 1 and 1000")
        return sorted(set(value))

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> Self:
        if self.budget_webhook_url is not None and self.budget_webhook_secret is None:
            raise _settings_error(
                "budget_webhook_secret", "is required with budget_webhook_url (it signs the calls)"
            )
        return self

    @field_validator("web_dir")
    @classmethod
    def _web_dir_is_built(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory (build the web app: npm run build)")
        if not (value / "index.html").is_file():
            raise ValueError(f"{value} has no index.html (build the web app: npm run build)")
        return value.resolve()

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


def default_database_url(data_dir: Path) -> str:
    """SQLite in the data directory (created if missing)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{(data_dir / 'gateway.db').resolve()}"
