"""Model aliases: the names clients use, and the provider instance that serves each.

Clients only ever see aliases ("default", "fast"), their description and context window.
Which provider, upstream model, key and fallbacks stand behind an alias is the model
configuration (:mod:`modelconfig`); this registry builds one provider per alias from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from aimesh_common.errors import NotFound
from aimesh_llm_router.modelconfig import DEFAULT_ALIAS, ModelsConfig, ModelSpec
from aimesh_llm_router.providers import Provider, ProviderContext, build_provider
from aimesh_llm_router.templates import load_prompt_library

__all__ = ["DEFAULT_ALIAS", "ModelRegistry", "ResolvedModel", "build_registry"]


@dataclass(frozen=True)
class ResolvedModel:
    """An alias, its configuration and the provider instance that serves it."""

    alias: str
    config: ModelSpec
    provider: Provider

    @property
    def description(self) -> str:
        described = self.provider.describe()
        return f"{self.config.description}: {described}" if self.config.description else described


class ModelRegistry:
    """Resolves aliases (and their fallback chains) to providers; owns the providers."""

    def __init__(self, config: ModelsConfig, providers: Mapping[str, Provider]) -> None:
        if not config.models:
            raise ValueError("at least one model alias is required")
        missing = sorted(set(config.models) - set(providers))
        if missing:
            raise ValueError(f"no provider was built for the aliases {missing}")
        self.config = config
        self._models = {
            alias: ResolvedModel(alias, spec, providers[alias])
            for alias, spec in config.models.items()
        }

    @property
    def aliases(self) -> list[ResolvedModel]:
        return list(self._models.values())

    def resolve(self, alias: str) -> ResolvedModel:
        """The model for ``alias`` ("" means default); NotFound names the valid aliases."""
        name = alias or DEFAULT_ALIAS
        model = self._models.get(name)
        if model is None:
            available = ", ".join(self._models)
            raise NotFound(f"unknown model {name!r}; available: {available}")
        return model

    def chain(self, alias: str) -> list[ResolvedModel]:
        """``alias`` followed by its configured fallbacks, in order."""
        first = self.resolve(alias)
        return [first, *(self._models[name] for name in first.config.fallbacks)]

    async def aclose(self) -> None:
        for model in self._models.values():
            await model.provider.aclose()


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
