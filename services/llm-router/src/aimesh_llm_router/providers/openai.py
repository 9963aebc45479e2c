"""The OpenAI provider: any OpenAI-compatible chat completions API via LangChain.

Works with OpenAI itself and with self-hosted servers that speak the same protocol (vLLM,
Ollama, LM Studio, llama.cpp server, TGI's Messages API, ...). Tasks run through
:class:`ChatModelProvider`; the key is scrubbed from anything passed on and never logged.
"""

from __future__ import annotations

from typing import Self

import httpx2
from langchain_openai import ChatOpenAI
from openai import DefaultAsyncHttpxClient
from pydantic import SecretStr

from aimesh_llm_router.config import DEFAULT_OPENAI_BASE_URL
from aimesh_llm_router.modelconfig import ModelSpec
from aimesh_llm_router.providers.base import ProviderContext
from aimesh_llm_router.providers.chat import (
    STYLE_INSTRUCTIONS,
    STYLE_WORDS,
    ChatModelProvider,
    traced_http_client,
)
from aimesh_llm_router.templates import PromptLibrary

__all__ = ["STYLE_INSTRUCTIONS", "STYLE_WORDS", "OpenAIProvider"]

# Placeholder key for keyless OpenAI-compatible servers (vLLM and Ollama ignore it).
_NO_KEY = "unused"


class OpenAIProvider(ChatModelProvider):
    """Chat models behind an OpenAI-compatible API."""

    name = "openai"
    supports_tools = True
    supports_response_format = True

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: SecretStr | None,
        timeout_seconds: float,
        max_retries: int,
        prompts: PromptLibrary,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self._model = model
        self._http = http_client
        self._prompts = prompts
        self._secret = api_key.get_secret_value() if api_key is not None else None
        self._chat = ChatOpenAI(
            model=model,
            base_url=base_url,
            api_key=api_key or SecretStr(_NO_KEY),
            timeout=timeout_seconds,
            max_retries=max_retries,
            stream_usage=True,
            use_responses_api=False,
            stream_chunk_timeout=timeout_seconds,
            http_async_client=http_client,
        )

    @classmethod
    def from_model(cls, spec: ModelSpec, context: ProviderContext) -> Self:
        """Retries are left to the router's resilience layer (see :mod:`resilience`), so
        the SDK makes one attempt per call: Retry-After, jitter and the circuit breaker
        then apply the same way to every provider."""
        if not spec.model:
            raise ValueError("the openai provider needs 'model' (the upstream model name)")
        return cls(
            base_url=spec.base_url or DEFAULT_OPENAI_BASE_URL,
            model=spec.model,
            api_key=spec.api_key,
            timeout_seconds=spec.timeout_seconds,
            max_retries=0,
            prompts=context.prompts,
            http_client=traced_http_client(context, DefaultAsyncHttpxClient),
        )

    def describe(self) -> str:
        return f"OpenAI-compatible chat model {self._model}"
