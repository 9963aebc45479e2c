"""The model configuration: aliases clients use, and how each one is served.

One YAML file (``AIMESH_MODELS_FILE``, a ConfigMap in Kubernetes) maps aliases such as
``default``, ``fast`` or ``summarizer`` to a provider, an upstream model, its base URL,
where its key comes from (an environment variable or a mounted secret file), timeouts,
token limits, prices and an ordered fallback chain::

    models:
      default:
        provider: openai
        model: gpt-4o-mini
        base_url: https://api.openai.com/v1
        api_key_env: OPENAI_API_KEY
        timeout_seconds: 30
        max_tokens: 1024
        context_window: 128000
        price_per_1k_input: 0.00015
        price_per_1k_output: 0.0006
        fallbacks: [fast]
      fast:
        provider: local

Without a file, :func:`default_models_config` builds the configuration the ``AIMESH_LLM_*``
and ``OPENAI_*`` settings describe (the local provider, or openai when a key is set), so a
deployment without a file behaves as before.

The file is validated when the service starts; every problem is reported on its own line
naming the alias and field, and the service exits with status 2. Keys are resolved here,
kept as ``SecretStr``, and never shown by ListModels, logs or errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from aimesh_llm_router.config import DEFAULT_CONTEXT_WINDOWS, Settings

DEFAULT_ALIAS = "default"

# What happens to personal data in a request to an alias (docs/privacy.md): sent as it is,
# replaced by placeholders (and put back into the reply), or the request refused.
PrivacyPolicy = Literal["off", "redact", "block"]


class ModelConfigError(ValueError):
    """The model configuration is invalid; ``problems`` holds one readable line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid model configuration {source}:\n{lines}")


class ModelSpec(BaseModel):
    """How one alias is served."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field(min_length=1, description="Registered provider name.")
    model: str = Field("", description="Upstream model name (or a directory for local models).")
    description: str = Field("", description="Shown by ListModels; never a URL or a key.")
    base_url: str | None = Field(None, pattern=r"^https?://", description="Upstream API root.")
    api_key_env: str | None = Field(None, min_length=1, description="Variable holding the key.")
    api_key_file: Path | None = Field(None, description="Mounted secret file holding the key.")
    timeout_seconds: float = Field(60.0, gt=0, le=600, description="Budget of one attempt.")
    deadline_seconds: float = Field(
        120.0, gt=0, le=3600, description="Budget of a whole call: attempts, backoff, fallbacks."
    )
    max_retries: int = Field(2, ge=0, le=10, description="Retries of transient failures.")
    max_tokens: int = Field(1024, ge=1, le=1_000_000, description="Most tokens per reply.")
    context_window: int = Field(4096, ge=512, le=10_000_000, description="Context in tokens.")
    price_per_1k_input: float = Field(0.0, ge=0, description="Price of 1000 prompt tokens.")
    price_per_1k_output: float = Field(0.0, ge=0, description="Price of 1000 output tokens.")
    fallbacks: list[str] = Field(default_factory=list, description="Aliases tried in order.")
    prompts: dict[Literal["summarize", "qa", "chat"], int] = Field(
        default_factory=dict,
        description="Template version per task for this alias (default: version 1).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Provider-specific options (e.g. temperature)."
    )
    privacy: PrivacyPolicy | None = Field(
        None,
        description="Personal data policy; unset: off where the provider keeps data on the "
        "machine, else privacy.default.",
    )
    # Resolved from api_key_env / api_key_file at load time; never part of the file.
    api_key: SecretStr | None = Field(None, exclude=True, repr=False)

    @property
    def upstream_key(self) -> str:
        """Identifies the upstream for the circuit breaker: one per provider endpoint."""
        return f"{self.provider}|{self.base_url or ''}|{self.model}"

    @property
    def priced(self) -> bool:
        """Whether calls can be billed: a price is set in the file (0 included: the operator
        says it is free), or the provider is the in-process extractive one, which costs
        nothing. Budgets refuse an unpriced alias under a hard budget."""
        prices = {"price_per_1k_input", "price_per_1k_output"}
        return bool(prices & self.model_fields_set) or self.provider == "local"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.price_per_1k_input + completion_tokens * self.price_per_1k_output
        ) / 1000.0


class RetrySpec(BaseModel):
    """Exponential backoff with full jitter between attempts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_delay_seconds: float = Field(0.5, ge=0, le=60)
    max_delay_seconds: float = Field(8.0, ge=0, le=600)
    # A Retry-After longer than this is not waited for: the next alias is tried instead.
    max_retry_after_seconds: float = Field(30.0, ge=0, le=3600)


class BreakerSpec(BaseModel):
    """A circuit per upstream opens after consecutive failures and cools down."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(5, ge=1, le=1000)
    cooldown_seconds: float = Field(30.0, gt=0, le=3600)


Task = Literal["chat", "summarize", "qa"]
TASKS: tuple[Task, ...] = ("chat", "summarize", "qa")


class TaskDefaults(BaseModel):
    """The alias that serves each task when a request names none.

    ``chat`` serves Generate (and /v1/chat/completions) and conversations without a
    collection; ``summarize`` serves Summarize; ``qa`` serves Answer (ask, ``rag:``) and
    conversations grounded in a collection.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    chat: str = Field(DEFAULT_ALIAS, min_length=1, description="Chat without sources.")
    summarize: str = Field(DEFAULT_ALIAS, min_length=1, description="Summaries.")
    qa: str = Field(DEFAULT_ALIAS, min_length=1, description="Grounded answers.")

    def alias(self, task: Task) -> str:
        return str(getattr(self, task))


class TenantPrivacy(BaseModel):
    """One tenant's privacy policies, over the aliases' own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: PrivacyPolicy | None = Field(None, description="For every alias of the tenant.")
    models: dict[str, PrivacyPolicy] = Field(
        default_factory=dict, description="Per alias (wins over default)."
    )


class PrivacySpec(BaseModel):
    """Personal data kept from third-party providers (docs/privacy.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: PrivacyPolicy = Field(
        "redact",
        description="Policy of aliases without their own whose provider sends data out.",
    )
    tenants: dict[str, TenantPrivacy] = Field(
        default_factory=dict, description="Overrides per tenant id."
    )

    def policy(self, tenant_id: str, alias: str, own: PrivacyPolicy) -> PrivacyPolicy:
        """The policy of ``alias`` (whose own, resolved policy is ``own``) for a tenant."""
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            return own
        return tenant.models.get(alias) or tenant.default or own


class ModelsConfig(BaseModel):
    """The whole model configuration file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, ModelSpec]
    defaults: TaskDefaults = Field(default_factory=TaskDefaults)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    circuit_breaker: BreakerSpec = Field(default_factory=BreakerSpec)


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _resolve_key(alias: str, spec: ModelSpec, environ: Mapping[str, str]) -> tuple[ModelSpec, str]:
    """The spec with its key filled in, or a problem description ("" when fine)."""
    if spec.api_key_env is not None:
        value = environ.get(spec.api_key_env, "").strip()
        if value:
            return spec.model_copy(update={"api_key": SecretStr(value)}), ""
        if spec.api_key_file is None:
            return spec, (
                f"models.{alias}.api_key_env: environment variable {spec.api_key_env} "
                "is not set or empty"
            )
    if spec.api_key_file is not None:
        try:
            value = spec.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            return spec, (
                f"models.{alias}.api_key_file: cannot read {spec.api_key_file}: {error.strerror}"
            )
        if not value:
            return spec, f"models.{alias}.api_key_file: {spec.api_key_file} is empty"
        return spec.model_copy(update={"api_key": SecretStr(value)}), ""
    return spec, ""


def validate_models_config(
    data: object,
    source: str,
    providers: frozenset[str],
    environ: Mapping[str, str] | None = None,
) -> ModelsConfig:
    """Parse and check ``data`` (the loaded YAML); ModelConfigError lists every problem."""
    env = os.environ if environ is None else environ
    if not isinstance(data, dict):
        raise ModelConfigError(source, ["the file must be a mapping with a 'models' key"])
    try:
        config = ModelsConfig.model_validate(data)
    except ValidationError as error:
        details = [
            f"{_location(detail['loc'])}: {detail['msg']}"
            for detail in error.errors(include_url=False, include_input=False)
        ]
        raise ModelConfigError(source, details) from None
    problems: list[str] = []
    if not config.models:
        problems.append("models: at least one alias is required")
    elif DEFAULT_ALIAS not in config.models:
        problems.append(f"models: an alias named {DEFAULT_ALIAS!r} is required")
    if config.models:
        for task in TASKS:
            chosen = config.defaults.alias(task)
            # A missing "default" alias is reported once, above.
            if chosen not in config.models and chosen != DEFAULT_ALIAS:
                problems.append(f"defaults.{task}: unknown alias {chosen!r}")
    for tenant, overrides in config.privacy.tenants.items():
        for alias in overrides.models:
            if alias not in config.models:
                problems.append(f"privacy.tenants.{tenant}.models: unknown alias {alias!r}")
    resolved: dict[str, ModelSpec] = {}
    for alias, spec in config.models.items():
        if spec.provider not in providers:
            known = ", ".join(sorted(providers))
            problems.append(
                f"models.{alias}.provider: unknown provider {spec.provider!r}; known: {known}"
            )
        for index, fallback in enumerate(spec.fallbacks):
            if fallback == alias:
                problems.append(
                    f"models.{alias}.fallbacks[{index}]: an alias cannot fall back to itself"
                )
            elif fallback not in config.models:
                problems.append(f"models.{alias}.fallbacks[{index}]: unknown alias {fallback!r}")
        if len(set(spec.fallbacks)) != len(spec.fallbacks):
            problems.append(f"models.{alias}.fallbacks: lists an alias twice")
        if spec.max_tokens >= spec.context_window:
            problems.append(
                f"models.{alias}.max_tokens: {spec.max_tokens} leaves no room in the context "
                f"window of {spec.context_window}"
            )
        if spec.timeout_seconds > spec.deadline_seconds:
            problems.append(
                f"models.{alias}.timeout_seconds: longer than deadline_seconds "
                f"({spec.timeout_seconds:g} > {spec.deadline_seconds:g})"
            )
        with_key, problem = _resolve_key(alias, spec, env)
        if problem:
            problems.append(problem)
        resolved[alias] = with_key
    if problems:
        raise ModelConfigError(source, problems)
    return config.model_copy(update={"models": resolved})


def load_models_config(
    path: Path, providers: frozenset[str], environ: Mapping[str, str] | None = None
) -> ModelsConfig:
    """Read and validate the model configuration file at ``path``."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ModelConfigError(source, [f"cannot read the file: {error.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ModelConfigError(source, [f"not valid YAML: {error}"]) from None
    return validate_models_config(data, source, providers, environ)


LOCAL_MODEL_ALIAS = "local-model"


def default_models_config(settings: Settings) -> ModelsConfig:
    """The configuration without a file: ``default`` and ``fast`` on the configured provider.

    This reproduces the behaviour of the ``AIMESH_LLM_PROVIDER`` / ``OPENAI_*`` settings:
    the local extractive provider, or openai when a key (or a keyless base URL) is set.

    With ``AIMESH_LLM_LOCAL_MODEL_URL`` (the model server, ``aimesh-model-server``) an alias
    ``local-model`` on the ``openai`` provider is added, falling back to ``default``; when
    ``default`` is the extractive provider, chat (no sources) goes to ``local-model`` by
    default while summaries and grounded answers stay on the extractor, which answers
    grounded questions right more often than the small packaged model (60 % against 20 %).
    """
    provider = settings.provider
    common: dict[str, Any] = {
        "provider": provider,
        "timeout_seconds": settings.request_timeout_seconds,
        "deadline_seconds": max(120.0, settings.request_timeout_seconds * 2),
        "max_tokens": settings.max_tokens,
        "context_window": settings.context_window or DEFAULT_CONTEXT_WINDOWS[provider],
    }
    if provider == "openai":
        common.update(
            model=settings.openai_model,
            base_url=settings.openai_base_url,
            max_retries=settings.openai_max_retries,
            api_key=settings.openai_api_key,
        )
    else:
        common.update(max_retries=0, options={"answer_threshold": settings.local_answer_threshold})
    models = {
        "default": ModelSpec(description="General-purpose model", **common),
        "fast": ModelSpec(description="Low-latency model", **common),
    }
    defaults = TaskDefaults()
    if settings.llm_local_model_url is not None:
        models[LOCAL_MODEL_ALIAS] = ModelSpec(
            description="Local model server",
            provider="openai",
            model=settings.llm_local_model_name,
            base_url=settings.llm_local_model_url,
            # A model server still loading refuses connections: fall back at once.
            max_retries=0,
            timeout_seconds=settings.request_timeout_seconds,
            deadline_seconds=max(120.0, settings.request_timeout_seconds * 2),
            max_tokens=min(
                settings.llm_local_model_max_tokens, settings.llm_local_model_context // 2
            ),
            context_window=settings.llm_local_model_context,
            fallbacks=[DEFAULT_ALIAS],
            # It runs on this machine: free, and billable under a hard budget.
            price_per_1k_input=0.0,
            price_per_1k_output=0.0,
            # The project's own model server: the data stays on the machine.
            privacy="off",
        )
        if provider == "local":
            defaults = TaskDefaults(chat=LOCAL_MODEL_ALIAS)
    return ModelsConfig(models=models, defaults=defaults)
