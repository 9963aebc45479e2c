"""Providers built on a LangChain chat model: templates rendered, replies streamed.

:class:`ChatModelProvider` runs the router's tasks on any ``BaseChatModel`` (OpenAI,
Anthropic, a TGI endpoint, a local ``transformers`` model): it renders the router's
templates, calls ``ainvoke`` or ``astream``, reads usage from the reply (estimating it
when the upstream gives none) and turns SDK failures into aimesh errors with the key
scrubbed. A subclass only builds its chat model and says how to describe it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import ToolCallChunk
from langchain_core.runnables import Runnable
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor

from aimesh_common.errors import Unavailable
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
from aimesh_llm_router.templates import PromptLibrary, Task
from aimesh_llm_router.tokens import Usage, count_tokens
from aimesh_llm_router.tools import ToolCall, ToolOptions, calls_from_chunks
from aimesh_llm_router.upstream import from_sdk_error, with_retry_after

log = logging.getLogger("aimesh.llm_router.chat")

STYLE_INSTRUCTIONS: dict[Style, str] = {
    "brief": "Write one short paragraph of about three sentences.",
    "bullets": "Write a bulleted list with one line per key point, each line starting with '- '.",
    "detailed": "Write a detailed summary in a few paragraphs that covers every main point.",
}
STYLE_WORDS: dict[Style, int] = {"brief": 60, "bullets": 100, "detailed": 200}
_LENGTH_REASONS = frozenset({"length", "max_tokens", "MAX_TOKENS"})
# The most text a streamed reply may carry per token of its max_tokens: far above any real
# reply (tokens average about 4 characters), so only an upstream that ignores max_tokens
# meets it. Past it the reply is cut (finish_reason "length") and the upstream's stream
# closed, instead of passing on whatever it sends (issue 19: 48 MiB for max_tokens 16).
MAX_CHARS_PER_TOKEN = 128
_TOOL_REASONS = frozenset({"tool_calls", "tool_use", "function_call"})


def to_langchain(messages: Sequence[Message]) -> list[BaseMessage]:
    converted: list[BaseMessage] = []
    for message in messages:
        if message.role == "user":
            converted.append(HumanMessage(message.content))
        elif message.role == "assistant":
            calls = [call.langchain() for call in message.tool_calls]
            converted.append(AIMessage(message.content, tool_calls=calls))
        elif message.role == "tool":
            converted.append(ToolMessage(message.content, tool_call_id=message.tool_call_id))
        else:
            converted.append(SystemMessage(message.content))
    return converted


def text_of(message: BaseMessage) -> str:
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


def prompt_text(messages: Sequence[BaseMessage]) -> str:
    return "\n".join(text_of(message) for message in messages)


def _finish(metadata: dict[str, Any]) -> FinishReason:
    reason = metadata.get("finish_reason") or metadata.get("stop_reason")
    if reason in _TOOL_REASONS:
        return "tool_calls"
    return "length" if reason in _LENGTH_REASONS else "stop"


def traced_http_client(
    context: ProviderContext, make: Callable[[], httpx2.AsyncClient]
) -> httpx2.AsyncClient | None:
    """When the router traces, an HTTP client for the model's SDK (``make`` builds it with
    the SDK's defaults) whose requests are CLIENT spans sending their ``traceparent``
    upstream (``opentelemetry-instrumentation-httpx``, with the router's provider); None
    otherwise, and the SDK uses its own client. The OpenAI and Anthropic SDKs speak
    ``httpx2``, hence its instrumentor."""
    if context.tracer_provider is None:
        return None
    client = make()
    # Annotated with httpx's classes, but the httpx2 instrumentor takes httpx2's.
    HTTPX2ClientInstrumentor.instrument_client(
        client,  # type: ignore[arg-type]
        tracer_provider=context.tracer_provider,
    )
    return client


class ChatModelProvider(Provider):
    """Runs the tasks on ``self._chat``; subclasses build it in ``__init__``."""

    _chat: BaseChatModel
    _prompts: PromptLibrary
    _secret: str | None = None
    # The traced HTTP client the chat model uses (see traced_http_client), closed here.
    _http: httpx2.AsyncClient | None = None

    def _usage(
        self, message: BaseMessage | None, prompt: Sequence[BaseMessage], completion: str
    ) -> Usage:
        metadata = getattr(message, "usage_metadata", None) if message is not None else None
        if metadata and (metadata.get("input_tokens") or metadata.get("output_tokens")):
            return Usage(
                int(metadata.get("input_tokens", 0)),
                int(metadata.get("output_tokens", 0)),
                estimated=False,
            )
        return Usage(
            count_tokens(prompt_text(prompt)),
            count_tokens(completion),
            estimated=True,
        )

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Re-raise upstream failures as aimesh errors, logging status but never the key."""
        try:
            yield
        except Exception as error:
            mapped = from_sdk_error(error, self._secret)
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
            raise with_retry_after(mapped, error) from None

    def _options(self, max_tokens: int, temperature: float | None) -> dict[str, Any]:
        options: dict[str, Any] = {"max_tokens": max_tokens}
        if temperature is not None:
            options["temperature"] = temperature
        return options

    async def _complete(self, messages: list[BaseMessage], max_tokens: int) -> Completion:
        with self._translated():
            reply = await self._chat.ainvoke(messages, **self._options(max_tokens, None))
        text = text_of(reply).strip()
        return Completion(
            text=text,
            usage=self._usage(reply, messages, text),
            finish_reason=_finish(reply.response_metadata),
        )

    def prompt_version(self, task: Task) -> str:
        return self._prompts.template(task).label

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def _summarize_messages(self, task: SummarizeTask) -> list[BaseMessage]:
        return self._prompts.summarize.render(
            text=task.text,
            style_instructions=STYLE_INSTRUCTIONS[task.style],
            max_words=task.max_words or STYLE_WORDS[task.style],
        )

    def _answer_messages(self, task: AnswerTask) -> list[BaseMessage]:
        return self._prompts.qa.render(question=task.question, sources=render_sources(task.sources))

    async def summarize(self, task: SummarizeTask) -> Completion:
        return await self._complete(self._summarize_messages(task), task.max_tokens)

    async def answer(self, task: AnswerTask) -> Completion:
        return await self._complete(self._answer_messages(task), task.max_tokens)

    def generate(self, task: GenerateTask) -> AsyncIterator[Delta]:
        messages = self._prompts.chat.render(conversation=to_langchain(task.messages))
        options = self._options(task.max_tokens, task.temperature)
        if task.stop:
            options["stop"] = list(task.stop)
        if task.response_format is not None:
            options["response_format"] = dict(task.response_format)
        if not task.tools.tools:
            return self._stream(messages, options)
        return self._stream(messages, options, self._with_tools(task.tools))

    def _with_tools(self, tools: ToolOptions) -> Runnable[LanguageModelInput, BaseMessage]:
        """The chat model with the function tools bound (OpenAI tool format)."""
        choice: str | None = tools.forced or tools.choice or None
        # parallel_tool_calls only when the caller set it: not every chat model takes it.
        extra = {} if tools.parallel is None else {"parallel_tool_calls": tools.parallel}
        return self._chat.bind_tools(
            [tool.openai() for tool in tools.tools], tool_choice=choice, **extra
        )

    def stream_summarize(self, task: SummarizeTask) -> AsyncIterator[Delta]:
        return self._stream(self._summarize_messages(task), self._options(task.max_tokens, None))

    def stream_answer(self, task: AnswerTask) -> AsyncIterator[Delta]:
        return self._stream(self._answer_messages(task), self._options(task.max_tokens, None))

    def _pieces(
        self,
        messages: list[BaseMessage],
        options: dict[str, Any],
        model: Runnable[LanguageModelInput, BaseMessage] | None = None,
    ) -> AsyncGenerator[Piece, None]:
        """The reply to ``messages`` piece by piece, from the chat model's ``astream``; a
        provider may read its upstream more cheaply (see ``OpenAIProvider``)."""
        return _langchain_pieces((model or self._chat).astream(messages, **options))

    async def _stream(
        self,
        messages: list[BaseMessage],
        options: dict[str, Any],
        model: Runnable[LanguageModelInput, BaseMessage] | None = None,
    ) -> AsyncIterator[Delta]:
        """Stream the reply to ``messages``; the last delta has finish_reason, usage and the
        tool calls (streamed call pieces are merged, a call is only passed on complete)."""
        pieces: list[str] = []
        finish: FinishReason = "stop"
        calls: AIMessageChunk | None = None
        # Usage may arrive in pieces (Anthropic: input tokens in message_start, cumulative
        # counts in message_delta; OpenAI: once, in the last chunk), so each kind is the
        # largest count seen: a cumulative count replaces an earlier one, never adds to it.
        usage_message: AIMessageChunk | None = None
        # Whether the upstream sent any part of a completion (text, a tool call, a finish
        # reason): a 200 stream of events in another schema carries none, and is a failure
        # (so the call falls back), not an empty answer.
        completed = False
        room = int(options["max_tokens"]) * MAX_CHARS_PER_TOKEN
        chunks = self._pieces(messages, options, model)
        with self._translated():
            try:
                async for chunk in chunks:
                    if chunk.tool_call_chunks or chunk.text or chunk.finish_reason:
                        completed = True
                    if chunk.tool_call_chunks:
                        piece = AIMessageChunk(content="", tool_call_chunks=chunk.tool_call_chunks)
                        calls = piece if calls is None else calls + piece
                    if chunk.usage:
                        usage_message = _largest_usage(usage_message, chunk.usage)
                    text = chunk.text[:room]
                    room -= len(text)
                    if text:
                        pieces.append(text)
                        yield Delta(text=text, prompt_tokens=_reported_prompt(usage_message))
                    if chunk.finish_reason:
                        finish = _finish({"finish_reason": chunk.finish_reason})
                    if room <= 0:
                        log.warning(
                            "model provider sent far more than max_tokens allow; reply cut",
                            extra={"max_tokens": options["max_tokens"]},
                        )
                        finish = "length"
                        break
            finally:
                await chunks.aclose()
        if not completed:
            log.warning("model provider stream carried no completion")
            raise Unavailable("the model provider's stream carried no completion")
        tool_calls = calls_from_chunks(calls.tool_call_chunks) if calls is not None else ()
        if tool_calls and finish == "stop":
            finish = "tool_calls"  # some servers end a tool call with "stop"
        completion = "".join(pieces) + "".join(_call_text(call) for call in tool_calls)
        yield Delta(
            text="",
            finish_reason=finish,
            usage=self._usage(usage_message, messages, completion),
            tool_calls=tool_calls,
        )


@dataclass(frozen=True, slots=True)
class Piece:
    """One piece of a streamed reply, whatever read it: text, tool-call pieces (LangChain's
    ``tool_call_chunks`` shape: name, args, id, index), usage counts, the finish reason."""

    text: str = ""
    tool_call_chunks: list[ToolCallChunk] = field(default_factory=list)
    usage: UsageMetadata | None = None
    finish_reason: str | None = None


async def _langchain_pieces(
    chunks: AsyncIterator[BaseMessage],
) -> AsyncGenerator[Piece, None]:
    try:
        async for chunk in chunks:
            if isinstance(chunk, AIMessageChunk):
                reason = _finish_reason(chunk)
                yield Piece(
                    text_of(chunk),
                    chunk.tool_call_chunks,
                    chunk.usage_metadata,
                    str(reason) if reason else None,
                )
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def _largest_usage(seen: AIMessageChunk | None, piece: UsageMetadata) -> AIMessageChunk:
    """The usage so far with ``piece`` merged in, each count the largest seen."""
    before = seen.usage_metadata if seen is not None and seen.usage_metadata else None
    prompt = max(piece.get("input_tokens", 0), before["input_tokens"] if before else 0)
    completion = max(piece.get("output_tokens", 0), before["output_tokens"] if before else 0)
    return AIMessageChunk(
        content="",
        usage_metadata={
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
        },
    )


def _reported_prompt(usage: AIMessageChunk | None) -> int | None:
    """The prompt tokens the upstream reported so far, None when it reported none."""
    metadata = usage.usage_metadata if usage is not None else None
    return int(metadata["input_tokens"]) if metadata and metadata["input_tokens"] else None


def _finish_reason(chunk: AIMessageChunk) -> object:
    return chunk.response_metadata.get("finish_reason") or chunk.response_metadata.get(
        "stop_reason"
    )


def _call_text(call: ToolCall) -> str:
    """A call as the model wrote it, for estimating its tokens."""
    return f"{call.name}({call.arguments})"
