"""The interface every provider implements, and the task data it receives.

Providers get task variables, never client-built prompts: a provider that talks to a
model renders the router's templates itself, so the system prompt always comes from the
router.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Self

from aimesh.embedding.v1 import embedding_pb2_grpc
from aimesh_llm_router.citations import Source
from aimesh_llm_router.config import Settings
from aimesh_llm_router.modelconfig import ModelSpec, default_models_config
from aimesh_llm_router.templates import PromptLibrary
from aimesh_llm_router.tokens import Usage

Style = Literal["brief", "bullets", "detailed"]
Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length"]


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


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerateTask:
    messages: Sequence[Message]
    max_tokens: int
    temperature: float | None


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


@dataclass(frozen=True)
class ProviderContext:
    """What a provider may need to build itself: settings, templates, backends."""

    settings: Settings
    prompts: PromptLibrary
    embedding: embedding_pb2_grpc.EmbeddingServiceAsyncStub | None


class Provider(ABC):
    """A way of running the router's tasks (a hosted model, a local algorithm, ...)."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_model(cls, spec: ModelSpec, context: ProviderContext) -> Self:
        """Build the provider for one alias's ``spec``; raise ValueError when it cannot run."""

    @classmethod
    def from_context(cls, context: ProviderContext) -> Self:
        """Build the provider as the settings alone describe it (no model file)."""
        spec = default_models_config(context.settings).models["default"]
        return cls.from_model(spec.model_copy(update={"provider": cls.name}), context)

    @abstractmethod
    def describe(self) -> str:
        """A human description for ListModels: never a URL or a key."""

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
