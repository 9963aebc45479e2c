"""The Anthropic provider: Claude models through the Messages API via LangChain.

``base_url`` defaults to Anthropic's API; a gateway or proxy speaking the same protocol
can be named instead. Retries are left to the router's resilience layer.
"""

from __future__ import annotations

from typing import Any, Self

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable
from pydantic import SecretStr

from aimesh_common.errors import InvalidArgument
from aimesh_llm_router.modelconfig import ModelSpec
from aimesh_llm_router.providers.base import ProviderContext
from aimesh_llm_router.providers.chat import ChatModelProvider, traced_http_client
from aimesh_llm_router.tools import ToolOptions

DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"


class AnthropicProvider(ChatModelProvider):
    """Claude chat models behind the Anthropic Messages API."""

    name = "anthropic"
    supports_tools = True

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: SecretStr,
        timeout_seconds: float,
        max_tokens: int,
        context: ProviderContext,
    ) -> None:
        self._model = model
        self._prompts = context.prompts
        self._secret = api_key.get_secret_value()
        options: dict[str, Any] = {
            "model": model,
            "base_url": base_url,
            "api_key": api_key,
            "timeout": timeout_seconds,
            "max_retries": 0,
            "max_tokens": max_tokens,
            "stream_usage": True,
        }
        # Imported here: the SDK takes seconds to import and most deployments never use it.
        import anthropic
        from langchain_anthropic import ChatAnthropic

        self._chat = ChatAnthropic(**options)
        self._http = traced_http_client(context, anthropic.DefaultAsyncHttpxClient)
        if self._http is not None:
            # ChatAnthropic takes no HTTP client: its SDK client (a cached property, built
            # on first use from _client_params with a shared client) is built here, with
            # the same parameters and the traced client.
            self._chat.__dict__["_async_client"] = anthropic.AsyncClient(
                **self._chat._client_params, http_client=self._http
            )

    @classmethod
    def from_model(cls, spec: ModelSpec, context: ProviderContext) -> Self:
        if not spec.model:
            raise ValueError("the anthropic provider needs 'model' (e.g. claude-sonnet-4-5)")
        if spec.api_key is None:
            raise ValueError("the anthropic provider needs api_key_env or api_key_file")
        return cls(
            base_url=(spec.base_url or DEFAULT_ANTHROPIC_BASE_URL).rstrip("/"),
            model=spec.model,
            api_key=spec.api_key,
            timeout_seconds=spec.timeout_seconds,
            max_tokens=spec.max_tokens,
            context=context,
        )

    def describe(self) -> str:
        return f"Anthropic chat model {self._model}"

    def _with_tools(self, tools: ToolOptions) -> Runnable[LanguageModelInput, BaseMessage]:
        """OpenAI tool choices in Anthropic's terms ("required" is "any")."""
        choice: dict[str, str] | str | None = None
        if tools.forced:
            choice = tools.forced
        elif tools.choice == "required":
            choice = "any"
        elif tools.choice == "none":
            choice = {"type": "none"}
        elif tools.choice == "auto":
            choice = "auto"
        definitions = [tool.openai() for tool in tools.tools]
        try:
            # ChatAnthropic also takes a dict choice (BaseChatModel's signature says str).
            return self._chat.bind_tools(
                definitions,
                tool_choice=choice,  # type: ignore[arg-type]
                parallel_tool_calls=tools.parallel,
            )
        except ValueError as error:  # a schema the Messages API cannot take
            raise InvalidArgument(f"tools: {error}") from None
