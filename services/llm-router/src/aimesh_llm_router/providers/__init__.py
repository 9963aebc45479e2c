"""Providers, registered by name: adding one means one class and one entry here."""

from __future__ import annotations

from aimesh_llm_router.providers.base import Provider, ProviderContext
from aimesh_llm_router.providers.local import LocalProvider
from aimesh_llm_router.providers.openai import OpenAIProvider

PROVIDERS: dict[str, type[Provider]] = {
    LocalProvider.name: LocalProvider,
    OpenAIProvider.name: OpenAIProvider,
}


def build_provider(name: str, context: ProviderContext) -> Provider:
    """The provider registered as ``name``; ValueError for an unknown name."""
    try:
        cls = PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ValueError(f"unknown provider {name!r}; known: {known}") from None
    return cls.from_context(context)


__all__ = [
    "PROVIDERS",
    "LocalProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderContext",
    "build_provider",
]
