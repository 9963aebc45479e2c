"""The interface every provider implements, and the task data it receives.

Providers get task variables, never client-built prompts: a provider that talks to a
model renders the router's templates itself, so the system prompt always comes from the
router.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

from opentelemetry.sdk.trace import TracerProvider

from aimesh_common.embedding_client import EmbeddingClient
from aimesh_llm_router.citations import Source
from aimesh_llm_router.config import Settings
from aimesh_llm_router.modelconfig import ModelSpec, default_models_config
from aimesh_llm_router.templates import PromptLibrary, Task
from aimesh_llm_router.tokens import Usage
from aimesh_llm_router.tools import NO_TOOLS, ToolCall, ToolOptions

Style = Literal["brief", "bullets", "detailed"]
Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class SummarizeTask:
    text: str
    style: Style
    max_words: int
    max_tokens: int


@dataclass(frozen=True)
class AnswerTask:
    question: str
    sources: Sequence[Source]
    max_tokens: int
    # The question's embedding as retrieval computed it for the search (empty when it
    # did not embed it), so a provider that needs it does not embed the question again.
    question_vector: Sequence[float] = ()


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    # Tools an assistant message called.
    tool_calls: tuple[ToolCall, ...] = ()
    # For a "tool" message: the call it answers.
    tool_call_id: str = ""


@dataclass(frozen=True)
class GenerateTask:
    messages: Sequence[Message]
    max_tokens: int
    temperature: float | None
    # Functions the model may call (only given to providers with supports_tools).
    tools: ToolOptions = NO_TOOLS
    # Stop sequences for providers that support them (the router enforces them anyway).
    stop: tuple[str, ...] = ()
    # OpenAI's chat ``response_format`` (a JSON schema or JSON object reply); only given to
    # providers with supports_response_format.
    response_format: Mapping[str, Any] | None = None
    # A grounded conversation's sources and the user's bare message. The last message
    # already carries them rendered for a model; an extractive provider quotes from these.
    sources: tuple[Source, ...] = ()
    question: str = ""
    # The bare message's embedding from the search, as for AnswerTask.question_vector.
    question_vector: Sequence[float] = ()


@dataclass(frozen=True)
class Completion:
    """A whole reply."""

    text: str
    usage: Usage
    finish_reason: FinishReason = "stop"


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed reply; the last one carries finish_reason and usage."""

    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    # Complete tool calls (on the last delta, finish_reason "tool_calls").
    tool_calls: tuple[ToolCall, ...] = ()
    # The prompt's tokens as the provider reported them before the end of the reply
    # (Anthropic's message_start), on a text delta; None when not reported (yet).
    prompt_tokens: int | None = None


@dataclass(frozen=True)
class ProviderContext:
    """What a provider may need to build itself: settings, templates, backends."""

    settings: Settings
    prompts: PromptLibrary
    # The embedding service, when a local alias needs it.
    embedding: EmbeddingClient | None
    # The router's tracer provider when it traces: the HTTP calls to hosted models then
    # carry the trace (:func:`aimesh_llm_router.providers.chat.traced_http_client`).
    tracer_provider: TracerProvider | None = None


class Provider(ABC):
    """A way of running the router's tasks (a hosted model, a local algorithm, ...)."""

    name: ClassVar[str]
    # Whether generate() passes tools and tool messages to the model; Generate requests with
    # tools are refused by (and never fall back to) providers without.
    supports_tools: bool = False
    # Whether generate() makes the model follow GenerateTask.response_format; requests with
    # one are refused by (and never fall back to) providers without.
    supports_response_format: bool = False

    @classmethod
    @abstractmethod
    def from_model(cls, spec: ModelSpec, context: ProviderContext) -> Self:
        """Build the provider for one alias's ``spec``; raise ValueError when it cannot run."""

    @classmethod
    def keeps_data_local(cls, spec: ModelSpec) -> bool:
        """Whether serving ``spec`` keeps the request's data on this machine (no privacy
        policy needed by default); False: it goes to a third party's API."""
        return False

    @classmethod
    def from_context(cls, context: ProviderContext) -> Self:
        """Build the provider as the settings alone describe it (no model file)."""
        spec = default_models_config(context.settings).models["default"]
        return cls.from_model(spec.model_copy(update={"provider": cls.name}), context)

    @abstractmethod
    def describe(self) -> str:
        """A human description for ListModels: never a URL or a key."""

    def prompt_version(self, task: Task) -> str:
        """``"<task>/v<version>"`` of the template this provider renders for ``task``.

        "" by default: a provider that renders no template (the extractive local one).
        """
        return ""

    @abstractmethod
    async def summarize(self, task: SummarizeTask) -> Completion: ...

    @abstractmethod
    async def answer(self, task: AnswerTask) -> Completion: ...

    @abstractmethod
    def generate(self, task: GenerateTask) -> AsyncIterator[Delta]:
        """Stream the reply to a conversation; the last delta has finish_reason and usage."""

    async def stream_summarize(self, task: SummarizeTask) -> AsyncIterator[Delta]:
        """Stream a summary; by default the whole summary as one delta."""
        result = await self.summarize(task)
        yield Delta(text=result.text, finish_reason=result.finish_reason, usage=result.usage)

    async def stream_answer(self, task: AnswerTask) -> AsyncIterator[Delta]:
        """Stream an answer; by default the whole answer as one delta."""
        result = await self.answer(task)
        yield Delta(text=result.text, finish_reason=result.finish_reason, usage=result.usage)

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most hold nothing
        """Release connections; the default has nothing to release."""
