"""Model aliases: the names clients use, and the provider instance that serves each.

Clients only ever see aliases ("default", "fast"), their description and context window.
Which provider, upstream model, key and fallbacks stand behind an alias is the model
configuration (:mod:`modelconfig`); this registry builds one provider per alias from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from aimesh_common.errors import NotFound
from aimesh_llm_router.modelconfig import (
    DEFAULT_ALIAS,
    TASKS,
    ModelsConfig,
    ModelSpec,
    PrivacyPolicy,
    Task,
)
from aimesh_llm_router.privacy.detector import Detector, load_detector
from aimesh_llm_router.privacy.guard import PrivacyGuard
from aimesh_llm_router.providers import PROVIDERS, Provider, ProviderContext, build_provider
from aimesh_llm_router.templates import load_prompt_library

__all__ = [
    "DEFAULT_ALIAS",
    "EXTRACTIVE_PROVIDER",
    "ModelRegistry",
    "ResolvedModel",
    "build_registry",
]

# The provider that answers from the sources themselves (quotes; no model).
EXTRACTIVE_PROVIDER = "local"


@dataclass(frozen=True)
class ResolvedModel:
    """An alias, its configuration and the provider instance that serves it."""

    alias: str
    config: ModelSpec
    provider: Provider
    # The alias's own privacy policy (tenants may override it: ModelRegistry.chain).
    privacy: PrivacyPolicy = "off"

    @property
    def description(self) -> str:
        described = self.provider.describe()
        return f"{self.config.description}: {described}" if self.config.description else described


class ModelRegistry:
    """Resolves aliases (and their fallback chains) to providers; owns the providers."""

    def __init__(
        self,
        config: ModelsConfig,
        providers: Mapping[str, Provider],
        detector: Detector | None = None,
    ) -> None:
        if not config.models:
            raise ValueError("at least one model alias is required")
        missing = sorted(set(config.models) - set(providers))
        if missing:
            raise ValueError(f"no provider was built for the aliases {missing}")
        self.config = config
        self._models = {
            alias: ResolvedModel(alias, spec, providers[alias], alias_privacy(config, alias))
            for alias, spec in config.models.items()
        }
        if detector is None and needs_detector(config):
            detector = load_detector()
        self._detector = detector

    @property
    def aliases(self) -> list[ResolvedModel]:
        return list(self._models.values())

    def default_alias(self, task: Task | None) -> str:
        """The alias serving ``task`` when a request names none (``defaults`` in the file)."""
        return DEFAULT_ALIAS if task is None else self.config.defaults.alias(task)

    def resolve(self, alias: str, task: Task | None = None) -> ResolvedModel:
        """The model for ``alias``; "" means the default alias of ``task`` ("default"
        without one). NotFound names the valid aliases."""
        name = alias or self.default_alias(task)
        model = self._models.get(name)
        if model is None:
            available = ", ".join(self._models)
            raise NotFound(f"unknown model {name!r}; available: {available}")
        return model

    def chain(
        self, alias: str, task: Task | None = None, tenant_id: str = ""
    ) -> list[ResolvedModel]:
        """``alias`` (or ``task``'s default) followed by its configured fallbacks, in order,
        each under its privacy policy for ``tenant_id``: a model whose policy is redact or
        block is served through a :class:`PrivacyGuard`, so its provider never gets a
        detected value."""
        first = self.resolve(alias, task)
        chain = [first, *(self._models[name] for name in first.config.fallbacks)]
        return [self.guarded(model, tenant_id) for model in chain]

    def policy(self, model: ResolvedModel, tenant_id: str) -> PrivacyPolicy:
        return self.config.privacy.policy(tenant_id, model.alias, model.privacy)

    def guarded(self, model: ResolvedModel, tenant_id: str) -> ResolvedModel:
        """``model`` as ``tenant_id``'s requests reach it."""
        policy = self.policy(model, tenant_id)
        if policy == "off":
            return model
        assert self._detector is not None  # built whenever any policy is not off
        guard = PrivacyGuard(model.provider, policy, self._detector, model.alias)
        return replace(model, provider=guard)

    def defaults_of(self, alias: str) -> list[str]:
        """The tasks ``alias`` serves when a request names no model."""
        defaults = self.config.defaults
        return [task for task in TASKS if defaults.alias(task) == alias]

    def extractive(self, preferred: list[ResolvedModel]) -> ResolvedModel | None:
        """An alias on the extractive provider: the first of ``preferred``, else the first
        configured; None when no alias is extractive."""
        for model in [*preferred, *self._models.values()]:
            if model.provider.name == EXTRACTIVE_PROVIDER:
                return model
        return None

    async def aclose(self) -> None:
        for model in self._models.values():
            await model.provider.aclose()


def alias_privacy(config: ModelsConfig, alias: str) -> PrivacyPolicy:
    """The alias's own policy: its ``privacy``, else off where its provider keeps the data
    on the machine, else ``privacy.default``."""
    spec = config.models[alias]
    if spec.privacy is not None:
        return spec.privacy
    provider = PROVIDERS.get(spec.provider)
    if provider is not None and provider.keeps_data_local(spec):
        return "off"
    return config.privacy.default


def needs_detector(config: ModelsConfig) -> bool:
    """Whether any alias, for any tenant, redacts or blocks."""
    policies = {alias_privacy(config, alias) for alias in config.models}
    for tenant in config.privacy.tenants.values():
        policies.update(tenant.models.values())
        if tenant.default is not None:
            policies.add(tenant.default)
    return policies != {"off"}


def build_registry(config: ModelsConfig, context: ProviderContext) -> ModelRegistry:
    """One provider per alias of ``config``; ValueError names the alias that cannot run.

    An alias with ``prompts`` gets its own template versions (checked here, at start).
    """
    providers: dict[str, Provider] = {}
    for alias, spec in config.models.items():
        try:
            own = context
            if spec.prompts:
                library = load_prompt_library(context.settings.prompts_dir, spec.prompts)
                own = replace(context, prompts=library)
            providers[alias] = build_provider(spec, own)
        except ValueError as error:
            raise ValueError(f"model {alias!r}: {error}") from None
    return ModelRegistry(config, providers)
