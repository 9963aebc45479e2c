"""Model aliases: the names clients use, and the provider instance that serves each.

Clients only ever see aliases ("default", "fast"), their description and context window.
Which provider, upstream model, key and fallbacks stand behind an alias is the model
configuration (:mod:`modelconfig`); this registry builds one provider per alias from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from aimesh_common.errors import NotFound
from aimesh_llm_router.modelconfig import DEFAULT_ALIAS, TASKS, ModelsConfig, ModelSpec, Task
from aimesh_llm_router.providers import Provider, ProviderContext, build_provider
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

    def chain(self, alias: str, task: Task | None = None) -> list[ResolvedModel]:
        """``alias`` (or ``task``'s default) followed by its configured fallbacks, in order."""
        first = self.resolve(alias, task)
        return [first, *(self._models[name] for name in first.config.fallbacks)]

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
