"""Settings of the LLM router, read from the environment (``AIMESH_`` prefix).

The OpenAI key is read from ``OPENAI_API_KEY`` (the name every OpenAI tool uses) or
``AIMESH_OPENAI_API_KEY``, or from a mounted secret file named by
``AIMESH_OPENAI_API_KEY_FILE``. It is kept as a ``SecretStr`` so it never shows up in a
repr, a log line or a validation error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import SettingsConfigDict

from aimesh_common import db
from aimesh_common.settings import GrpcServiceSettings, service_addr

ProviderName = Literal["local", "openai"]

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
# Context windows assumed when AIMESH_CONTEXT_WINDOW is unset.
DEFAULT_CONTEXT_WINDOWS: dict[ProviderName, int] = {"openai": 128_000, "local": 4096}


def _settings_error(field: str, message: str, value: object = None) -> ValidationError:
    """A ValidationError located at ``field`` so the start-up message names its variable."""
    detail = InitErrorDetails(
        type=PydanticCustomError("value_error", message),
        loc=(field,),
        input=value,
    )
    return ValidationError.from_exception_data("Settings", [detail])


class Settings(GrpcServiceSettings):
    """Configuration of aimesh-llm-router."""

    model_config = SettingsConfigDict(validate_by_name=True, validate_by_alias=True)

    port: int = Field(50053, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int | None = Field(
        9103, ge=0, le=65535, description="Prometheus port; unset disables it, 0 picks a free one."
    )
    embedding_service_addr: str = service_addr("EMBEDDING_SERVICE_ADDR", "localhost:50051")
    retrieval_service_addr: str = service_addr("RETRIEVAL_SERVICE_ADDR", "localhost:50052")

    data_dir: Path = Field(
        Path(".aimesh"), description="Directory of the SQLite conversation store."
    )
    redis_url: SecretStr | None = Field(
        None,
        description="Redis URL of the conversation store (shared by replicas); unset means "
        "SQL: AIMESH_CONVERSATIONS_DATABASE_URL, else SQLite at <data_dir>/conversations.db.",
    )
    conversations_database_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy async URL of the SQL conversation store (shared by replicas), "
        "e.g. postgresql+asyncpg://user@host/db; unset means SQLite at "
        "<data_dir>/conversations.db. Not used when AIMESH_REDIS_URL is set.",
    )
    migrate_on_start: bool = Field(
        True,
        description="Apply the SQL conversation store's migrations when the router starts "
        "(else run make migrate, or python -m aimesh_llm_router.migrations, before it).",
    )
    redis_key_prefix: str = Field(
        "aimesh:conv:", min_length=1, description="Prefix of the conversation keys in Redis."
    )
    max_conversation_messages: int = Field(
        200, ge=2, le=10_000, description="Most messages one conversation may hold."
    )
    responses_retention_seconds: int = Field(
        30 * 86_400,
        ge=1,
        le=366 * 86_400,
        description="How long a stored response of the Responses API (POST /v1/responses "
        "with store) stays readable and continuable, in seconds (default 30 days, as OpenAI).",
    )
    prompts_dir: Path | None = Field(
        None,
        description="Directory of prompt templates (<task>/v<N>.yaml) replacing the packaged "
        "ones, e.g. a mounted ConfigMap.",
    )
    models_file: Path | None = Field(
        None,
        description="YAML model configuration (aliases, providers, fallbacks, prices); unset "
        "means default and fast on the provider the settings below select.",
    )
    llm_provider: Literal["auto", "local", "openai"] = Field(
        "auto",
        description="auto: openai when an OpenAI key is configured, else local (extractive).",
    )
    llm_local_model_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Base URL of the local model server (aimesh-model-server, e.g. "
        "http://127.0.0.1:8090/v1). Without a models file it adds the alias local-model, "
        "which then serves chat by default (falling back to the extractive default).",
    )
    llm_local_model_name: str = Field(
        "smollm2-135m-instruct",
        min_length=1,
        description="Model id the local model server serves (its GET /v1/models).",
    )
    llm_local_model_max_tokens: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Most tokens a reply of the local model may have (a small CPU model is "
        "slow on long replies).",
    )
    llm_local_model_context: int = Field(
        4096,
        ge=512,
        le=1_000_000,
        description="Context window of the local model server in tokens (its "
        "AIMESH_CONTEXT_TOKENS).",
    )
    openai_base_url: str = Field(
        DEFAULT_OPENAI_BASE_URL,
        pattern=r"^https?://",
        description="Base URL of an OpenAI-compatible API (OpenAI, vLLM, Ollama, ...).",
    )
    openai_model: str = Field("gpt-4o-mini", min_length=1, description="Upstream model name.")
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "AIMESH_OPENAI_API_KEY"),
        description="API key (env OPENAI_API_KEY or AIMESH_OPENAI_API_KEY).",
    )
    openai_api_key_file: Path | None = Field(
        None, description="File holding the API key (a mounted Kubernetes secret)."
    )
    openai_max_retries: int = Field(
        2, ge=0, le=10, description="Retries of transient upstream failures (429, 5xx, network)."
    )
    request_timeout_seconds: float = Field(
        60.0, gt=0, le=600, description="Timeout of one upstream model call."
    )
    max_tokens: int = Field(
        1024, ge=1, le=1_000_000, description="Most tokens a model may generate per call."
    )
    context_window: int | None = Field(
        None,
        ge=512,
        le=10_000_000,
        description="Context window in tokens; unset means 128000 for openai, 4096 for local.",
    )
    backend_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="Timeout of calls to the retrieval and embedding services."
    )
    local_answer_threshold: float = Field(
        0.35,
        ge=-1.0,
        le=1.0,
        description="Least cosine similarity between question and a sentence for the local "
        "provider to quote it.",
    )

    @field_validator("openai_api_key", mode="before")
    @classmethod
    def _blank_key_is_no_key(cls, value: object) -> object:
        """An empty variable (e.g. a Secret with an empty value) means "no key"."""
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @model_validator(mode="after")
    def _resolve_key(self) -> Self:
        if self.openai_api_key is None and self.openai_api_key_file is not None:
            try:
                key = self.openai_api_key_file.read_text(encoding="utf-8").strip()
            except OSError as error:
                raise _settings_error(
                    "openai_api_key_file", f"cannot read the key file: {error.strerror}"
                ) from None
            if not key:
                raise _settings_error("openai_api_key_file", "the key file is empty")
            # The model is frozen; the key file is resolved once, here.
            object.__setattr__(self, "openai_api_key", SecretStr(key))
        if (
            self.llm_provider == "openai"
            and self.openai_api_key is None
            and self.openai_base_url.rstrip("/") == DEFAULT_OPENAI_BASE_URL
        ):
            raise _settings_error(
                "llm_provider",
                "AIMESH_LLM_PROVIDER=openai needs OPENAI_API_KEY or AIMESH_OPENAI_API_KEY_FILE "
                "(a keyless server needs AIMESH_OPENAI_BASE_URL)",
                self.llm_provider,
            )
        return self

    @property
    def provider(self) -> ProviderName:
        """The provider that serves the aliases: ``auto`` resolved."""
        if self.llm_provider == "auto":
            return "openai" if self.openai_api_key is not None else "local"
        return self.llm_provider

    @property
    def resolved_conversations_database_url(self) -> str:
        """The SQL conversation store's URL: the configured one, or the SQLite file."""
        if self.conversations_database_url is not None:
            return self.conversations_database_url.get_secret_value()
        return db.sqlite_url(self.data_dir / "conversations.db")

    @property
    def effective_context_window(self) -> int:
        return self.context_window or DEFAULT_CONTEXT_WINDOWS[self.provider]
