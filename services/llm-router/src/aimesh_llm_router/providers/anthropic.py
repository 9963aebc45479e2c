"""The Anthropic provider: Claude models through the Messages API via LangChain.

``base_url`` defaults to Anthropic's API; a gateway or proxy speaking the same protocol
can be named instead. Retries are left to the router's resilience layer.
"""

from __future__ import annotations

from functools import cache
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


def _input_tokens(usage: Any) -> int:
    """Input tokens of an Anthropic usage object, the cached ones included (the API's
    ``input_tokens`` counts only those neither read from nor written to the cache)."""
    return sum(
        getattr(usage, name, None) or 0
        for name in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )


@cache
def _chat_model_class() -> type[Any]:
    """ChatAnthropic that also reports the input tokens of ``message_start``.

    LangChain reads a stream's usage only from ``message_delta``, whose usage the API
    documents as cumulative but guarantees only ``output_tokens`` in: a server that sends
    just that would leave the prompt at 0 tokens, reported as exact. Here the
    ``message_start`` chunk carries its input tokens (and no output); the provider merges a
    stream's usage by taking the largest count of each kind, so a later cumulative count
    replaces the start's instead of adding to it.
    """
    from langchain_anthropic import ChatAnthropic

    class StartUsageChatAnthropic(ChatAnthropic):
        def _make_message_chunk_from_anthropic_event(  # type: ignore[no-untyped-def]
            self, event, *, stream_usage=True, **kwargs
        ):
            chunk, start = super()._make_message_chunk_from_anthropic_event(
                event, stream_usage=stream_usage, **kwargs
            )
            if event.type == "message_start" and stream_usage and chunk is not None:
                tokens = _input_tokens(event.message.usage)
                chunk.usage_metadata = {
                    "input_tokens": tokens,
                    "output_tokens": 0,
                    "total_tokens": tokens,
                }
            return chunk, start

    return StartUsageChatAnthropic


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

        chat = _chat_model_class()(**options)
        self._chat = chat
        self._http = traced_http_client(context, anthropic.DefaultAsyncHttpxClient)
        if self._http is not None:
            # ChatAnthropic takes no HTTP client: its SDK client (a cached property, built
            # on first use from _client_params with a shared client) is built here, with
            # the same parameters and the traced client.
            chat.__dict__["_async_client"] = anthropic.AsyncClient(
                **chat._client_params, http_client=self._http
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
