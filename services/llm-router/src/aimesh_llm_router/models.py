"""Model aliases: the names clients use, and which provider serves each.

Clients only ever see aliases ("default", "fast"), their description and context window.
Today both aliases are served by the one configured provider; the registry takes any
list of :class:`AliasConfig`, so a model config file with per-alias providers and
fallbacks only needs to build a different list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aimesh_common.errors import NotFound
from aimesh_llm_router.config import Settings
from aimesh_llm_router.providers import Provider, ProviderContext, build_provider

DEFAULT_ALIAS = "default"


@dataclass(frozen=True)
class AliasConfig:
    """How one alias is served."""

    alias: str
    provider: str
    description: str
    context_window: int
    max_tokens: int


@dataclass(frozen=True)
class ResolvedModel:
    """An alias together with the provider instance that serves it."""

    config: AliasConfig
    provider: Provider

    @property
    def alias(self) -> str:
        return self.config.alias


class ModelRegistry:
    """Resolves aliases to providers; owns the provider instances."""

    def __init__(self, aliases: Sequence[AliasConfig], providers: Mapping[str, Provider]) -> None:
        if not aliases:
            raise ValueError("at least one model alias is required")
        missing = sorted({config.provider for config in aliases} - set(providers))
        if missing:
            raise ValueError(f"aliases refer to providers that were not built: {missing}")
        self._aliases = {config.alias: config for config in aliases}
        self._providers = dict(providers)

    @property
    def aliases(self) -> list[AliasConfig]:
        return list(self._aliases.values())

    def resolve(self, alias: str) -> ResolvedModel:
        """The model for ``alias`` ("" means default); NotFound names the valid aliases."""
        name = alias or DEFAULT_ALIAS
        config = self._aliases.get(name)
        if config is None:
            available = ", ".join(self._aliases)
            raise NotFound(f"unknown model {name!r}; available: {available}")
        return ResolvedModel(config=config, provider=self._providers[config.provider])

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()


def default_aliases(settings: Settings, provider: Provider) -> list[AliasConfig]:
    """ "default" and "fast", both served by the configured provider."""
    described = provider.describe()
    return [
        AliasConfig(
            alias=alias,
            provider=provider.name,
            description=f"{purpose}: {described}",
            context_window=settings.effective_context_window,
            max_tokens=settings.max_tokens,
        )
        for alias, purpose in (("default", "General-purpose model"), ("fast", "Low-latency model"))
    ]


def build_registry(context: ProviderContext) -> ModelRegistry:
    """The registry for the settings in ``context``: one provider, two aliases."""
    provider = build_provider(context.settings.provider, context)
    return ModelRegistry(default_aliases(context.settings, provider), {provider.name: provider})
