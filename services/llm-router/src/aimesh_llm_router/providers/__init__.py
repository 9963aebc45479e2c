"""Providers, registered by name: adding one means one class and one entry here."""

from __future__ import annotations

from aimesh_llm_router.modelconfig import ModelSpec
from aimesh_llm_router.providers.anthropic import AnthropicProvider
from aimesh_llm_router.providers.base import Provider, ProviderContext
from aimesh_llm_router.providers.huggingface import HuggingFaceProvider
from aimesh_llm_router.providers.local import LocalProvider
from aimesh_llm_router.providers.openai import OpenAIProvider

PROVIDERS: dict[str, type[Provider]] = {
    AnthropicProvider.name: AnthropicProvider,
    HuggingFaceProvider.name: HuggingFaceProvider,
    LocalProvider.name: LocalProvider,
    OpenAIProvider.name: OpenAIProvider,
}


def build_provider(spec: ModelSpec, context: ProviderContext) -> Provider:
    """The provider ``spec`` names, built for it; ValueError for an unknown name."""
    try:
        cls = PROVIDERS[spec.provider]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ValueError(f"unknown provider {spec.provider!r}; known: {known}") from None
    return cls.from_model(spec, context)


__all__ = [
    "PROVIDERS",
    "AnthropicProvider",
    "HuggingFaceProvider",
    "LocalProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderContext",
    "build_provider",
]
