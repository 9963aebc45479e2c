"""The OpenAI provider: any OpenAI-compatible chat completions API via LangChain.

Works with OpenAI itself and with self-hosted servers that speak the same protocol (vLLM,
Ollama, LM Studio, ...). Tasks are rendered with the router's templates; Generate streams
with ``astream``. Upstream failures become aimesh errors (see :mod:`upstream`); the key
is scrubbed from anything passed on and never logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from aimesh_llm_router.citations import render_sources
from aimesh_llm_router.providers.base import (
    AnswerTask,
    Completion,
    Delta,
    FinishReason,
    GenerateTask,
    Message,
    Provider,
    ProviderContext,
    Style,
    SummarizeTask,
)
from aimesh_llm_router.templates import PromptLibrary
from aimesh_llm_router.tokens import Usage
from aimesh_llm_router.upstream import from_openai_error

log = logging.getLogger("aimesh.llm_router.openai")

STYLE_INSTRUCTIONS: dict[Style, str] = {
    "brief": "Write one short paragraph of about three sentences.",
    "bullets": "Write a bulleted list with one line per key point, each line starting with '- '.",
    "detailed": "Write a detailed summary in a few paragraphs that covers every main point.",
}
STYLE_WORDS: dict[Style, int] = {"brief": 60, "bullets": 100, "detailed": 200}

# Placeholder key for keyless OpenAI-compatible servers (vLLM and Ollama ignore it).
_NO_KEY = "unused"


def _to_langchain(messages: Sequence[Message]) -> list[BaseMessage]:
    converted: list[BaseMessage] = []
    for message in messages:
        if message.role == "user":
            converted.append(HumanMessage(message.content))
        elif message.role == "assistant":
            converted.append(AIMessage(message.content))
        else:
            converted.append(SystemMessage(message.content))
    return converted


def _text_of(message: BaseMessage) -> str:
    """The text of a reply; content may be a string or a list of content blocks."""
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def _prompt_text(messages: Sequence[BaseMessage]) -> str:
    return "\n".join(_text_of(message) for message in messages)


def _usage(message: BaseMessage | None, prompt: Sequence[BaseMessage], completion: str) -> Usage:
    metadata = getattr(message, "usage_metadata", None) if message is not None else None
    if metadata:
        return Usage(
            int(metadata.get("input_tokens", 0)),
            int(metadata.get("output_tokens", 0)),
            estimated=False,
        )
    return Usage.estimate(_prompt_text(prompt), completion)


def _finish(metadata: dict[str, Any]) -> FinishReason:
    return "length" if metadata.get("finish_reason") == "length" else "stop"


class OpenAIProvider(Provider):
    """Chat models behind an OpenAI-compatible API."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: SecretStr | None,
        timeout_seconds: float,
        max_retries: int,
        prompts: PromptLibrary,
    ) -> None:
        self._model = model
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
        )

    @classmethod
    def from_context(cls, context: ProviderContext) -> Self:
        settings = context.settings
        return cls(
            base_url=settings.openai_base_url,
            model=settings.openai_model,
            api_key=settings.openai_api_key,
            timeout_seconds=settings.request_timeout_seconds,
            max_retries=settings.openai_max_retries,
            prompts=context.prompts,
        )

    def describe(self) -> str:
        return f"OpenAI-compatible chat model {self._model}"

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Re-raise upstream failures as aimesh errors, logging status but never the key."""
        try:
            yield
        except Exception as error:
            mapped = from_openai_error(error, self._secret)
            if mapped is None:
                raise
            log.warning(
                "model provider call failed",
                extra={
                    "error_type": type(error).__name__,
                    "status": getattr(error, "status_code", None),
                    "mapped_to": mapped.code.name,
                },
            )
            raise mapped from None

    def _options(self, max_tokens: int, temperature: float | None) -> dict[str, Any]:
        options: dict[str, Any] = {"max_tokens": max_tokens}
        if temperature is not None:
            options["temperature"] = temperature
        return options

    async def _complete(self, messages: list[BaseMessage], max_tokens: int) -> Completion:
        with self._translated():
            reply = await self._chat.ainvoke(messages, **self._options(max_tokens, None))
        text = _text_of(reply).strip()
        return Completion(
            text=text,
            usage=_usage(reply, messages, text),
            finish_reason=_finish(reply.response_metadata),
        )

    async def summarize(self, task: SummarizeTask) -> Completion:
        messages = self._prompts.summarize.render(
            text=task.text,
            style_instructions=STYLE_INSTRUCTIONS[task.style],
            max_words=task.max_words or STYLE_WORDS[task.style],
        )
        return await self._complete(messages, task.max_tokens)

    async def answer(self, task: AnswerTask) -> Completion:
        messages = self._prompts.qa.render(
            question=task.question, sources=render_sources(task.sources)
        )
        return await self._complete(messages, task.max_tokens)

    async def generate(self, task: GenerateTask) -> AsyncIterator[Delta]:
        messages = self._prompts.chat.render(conversation=_to_langchain(task.messages))
        options = self._options(task.max_tokens, task.temperature)
        pieces: list[str] = []
        finish: FinishReason = "stop"
        usage_message: BaseMessage | None = None
        with self._translated():
            async for chunk in self._chat.astream(messages, **options):
                text = _text_of(chunk)
                if text:
                    pieces.append(text)
                    yield Delta(text=text)
                if chunk.response_metadata.get("finish_reason"):
                    finish = _finish(chunk.response_metadata)
                if getattr(chunk, "usage_metadata", None):
                    usage_message = chunk
        yield Delta(
            text="", finish_reason=finish, usage=_usage(usage_message, messages, "".join(pieces))
        )
