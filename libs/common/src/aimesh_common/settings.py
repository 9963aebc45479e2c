"""Settings base: pydantic-settings with the ``AIMESH_`` prefix, validated at start."""

from __future__ import annotations

import sys
from typing import Literal, TypeVar

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses add their own fields."""

    model_config = SettingsConfigDict(env_prefix="AIMESH_", extra="ignore", frozen=True)

    log_level: LogLevel = "INFO"
    log_format: Literal["json", "text"] = Field(
        "json", description="json for machines (the default in images), text for a terminal."
    )
    grace_seconds: float = Field(
        10.0, ge=0, le=300, description="How long in-flight calls may run after SIGTERM."
    )


class GrpcServiceSettings(ServiceSettings):
    """Settings of a gRPC service: where it listens and where its metrics are served."""

    host: str = Field("[::]", description="Address the gRPC server binds.")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus port; unset disables it, 0 picks a free one."
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest gRPC message accepted or sent."
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector (e.g. http://otel-collector:4318): when set, every "
        "RPC gets a server span continuing the caller's trace, and the trace context is "
        "passed on to the backends; unset disables tracing.",
    )


def service_addr(env_name: str, default: str) -> str:
    """A backend address field read from ``<env_name>`` or ``AIMESH_<env_name>``."""
    field: str = Field(
        default,
        min_length=1,
        validation_alias=AliasChoices(env_name, f"AIMESH_{env_name}"),
        description=f"host:port of the backend (env {env_name}).",
    )
    return field


S = TypeVar("S", bound=BaseSettings)

# Values of fields whose names contain these words are never echoed back.
_SECRET_WORDS = ("secret", "key", "password", "token")


def format_validation_error(error: ValidationError, prefix: str = "AIMESH_") -> str:
    """One readable line per invalid setting, naming the environment variable."""
    lines = ["invalid settings:"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(settings)"
        env_name = field if field.isupper() else prefix + field.upper()
        value = item.get("input")
        secret = any(word in field.lower() for word in _SECRET_WORDS)
        shown = "" if secret or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {env_name}: {item['msg']}{shown}")
    return "\n".join(lines)


def load_settings(cls: type[S]) -> S:
    """Build settings from the environment, or print what is wrong and exit with status 2."""
    try:
        return cls()
    except ValidationError as error:
        print(format_validation_error(error), file=sys.stderr)
        raise SystemExit(2) from None
