"""The OpenAI provider: any OpenAI-compatible chat completions API via LangChain.

Works with OpenAI itself and with self-hosted servers that speak the same protocol (vLLM,
Ollama, LM Studio, llama.cpp server, TGI's Messages API, ...). Tasks run through
:class:`ChatModelProvider`; the key is scrubbed from anything passed on and never logged.

A streamed reply of plain text (every chat, answer and summary without tools or a response
format) is read without LangChain's and the SDK's per-chunk objects: the request is the one
LangChain builds (``_get_request_payload``) and goes through the SDK's client (its errors,
timeouts and Retry-After as before), and the server-sent events are read as JSON. That
reading cost the router more CPU per request than all of its own work (issue 20). Tool calls
and response formats keep LangChain's path.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Self

import httpx2
import openai
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import ToolCallChunk, tool_call_chunk
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import (
    OpenAIContextOverflowError,
    _handle_openai_bad_request,
)
from openai import DefaultAsyncHttpxClient
from pydantic import SecretStr

from aimesh_llm_router.config import DEFAULT_OPENAI_BASE_URL
from aimesh_llm_router.modelconfig import ModelSpec
from aimesh_llm_router.providers.base import ProviderContext
from aimesh_llm_router.providers.chat import (
    STYLE_INSTRUCTIONS,
    STYLE_WORDS,
    ChatModelProvider,
    Piece,
    traced_http_client,
)
from aimesh_llm_router.templates import PromptLibrary

__all__ = ["STYLE_INSTRUCTIONS", "STYLE_WORDS", "OpenAIProvider"]

# Placeholder key for keyless OpenAI-compatible servers (vLLM and Ollama ignore it).
_NO_KEY = "unused"


class OpenAIProvider(ChatModelProvider):
    """Chat models behind an OpenAI-compatible API."""

    _chat: ChatOpenAI
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

    def _pieces(
        self,
        messages: list[BaseMessage],
        options: dict[str, Any],
        model: Runnable[LanguageModelInput, BaseMessage] | None = None,
    ) -> AsyncGenerator[Piece, None]:
        if model is not None or "response_format" in options:
            return super()._pieces(messages, options, model)  # tools, response formats
        return self._plain_pieces(messages, options)

    async def _plain_pieces(
        self, messages: list[BaseMessage], options: dict[str, Any]
    ) -> AsyncGenerator[Piece, None]:
        """The reply read from the server-sent events as JSON (see the module's doc)."""
        options = dict(options)
        stop = options.pop("stop", None)
        payload = self._chat._get_request_payload(
            messages, stop=stop, stream=True, stream_options={"include_usage": True}, **options
        )
        client: openai.AsyncOpenAI = self._chat.root_async_client
        try:
            response = await client.post(
                "/chat/completions", body=payload, cast_to=httpx2.Response, stream=True
            )
        except openai.BadRequestError as error:
            body = error.body if isinstance(error.body, dict) else {}
            if body.get("code") == "context_length_exceeded":  # OpenAI's code for it
                raise OpenAIContextOverflowError(
                    message=error.message, response=error.response, body=error.body
                ) from error
            _handle_openai_bad_request(error)  # a context overflow by its words, as LangChain
            raise
        try:
            async for data in _events(response, self._chat.stream_chunk_timeout):
                if data.startswith("[DONE]"):
                    break
                chunk = json.loads(data)
                if not isinstance(chunk, dict):
                    raise ValueError("a stream chunk is not a JSON object")
                if chunk.get("error"):
                    reported = chunk["error"]
                    message = reported.get("message") if isinstance(reported, dict) else None
                    raise openai.APIError(
                        str(message or "the stream reported an error"),
                        response.request,
                        body=reported,
                    )
                yield _piece(chunk)
        finally:
            await response.aclose()


async def _events(response: httpx2.Response, chunk_timeout: float | None) -> AsyncIterator[str]:
    """The data of each server-sent event; TimeoutError when none comes for
    ``chunk_timeout`` seconds (one deadline moved on, not a task per event)."""
    data: list[str] = []
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(chunk_timeout or None) as deadline:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
            elif not line and data:
                yield "\n".join(data)
                data.clear()
                if chunk_timeout:
                    deadline.reschedule(loop.time() + chunk_timeout)
        if data:
            yield "\n".join(data)


def _piece(chunk: dict[str, Any]) -> Piece:
    """One ``chat.completion.chunk`` as a :class:`Piece`."""
    choices = chunk.get("choices") or ()
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    delta = choice.get("delta") or {}
    calls: list[ToolCallChunk] = []
    for call in delta.get("tool_calls") or ():
        function = call.get("function") or {}
        calls.append(
            tool_call_chunk(
                name=function.get("name"),
                args=function.get("arguments"),
                id=call.get("id"),
                index=call.get("index"),
            )
        )
    counts = chunk.get("usage")
    usage: UsageMetadata | None = None
    if isinstance(counts, dict):
        prompt, completion = (
            int(counts.get("prompt_tokens") or 0),
            int(counts.get("completion_tokens") or 0),
        )
        usage = UsageMetadata(
            input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion
        )
    content = delta.get("content")
    return Piece(
        text=content if isinstance(content, str) else "",
        tool_call_chunks=calls,
        usage=usage,
        finish_reason=choice.get("finish_reason") or None,
    )
