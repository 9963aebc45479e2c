"""The privacy policy at the provider boundary: every task passes here before it leaves.

:class:`PrivacyGuard` wraps the provider of an alias whose policy (for the requesting
tenant) is ``redact`` or ``block``. Summaries, grounded answers (the question and every
source: ask and ``rag:``), chat and conversations (every message, tool call arguments and
results, stop sequences) all reach a provider through one of its methods, so none can
bypass it:

- ``redact``: each text is redacted (:mod:`.redaction`) before the provider sees it; its
  reply, whole or streamed, and the arguments of tool calls it makes are restored;
- ``block``: a request holding personal data raises :class:`PersonalDataRefused` naming
  the entity types (INVALID_ARGUMENT: the fallback chain does not retry it).

Detected values are never logged; ``aimesh_llm_privacy_detections_total`` counts them per
entity type and action.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Self, TypeVar

from prometheus_client import Counter

from aimesh_common.errors import PersonalDataRefused
from aimesh_llm_router.citations import Source
from aimesh_llm_router.modelconfig import ModelSpec, PrivacyPolicy
from aimesh_llm_router.privacy.detector import Detector
from aimesh_llm_router.privacy.redaction import Redaction
from aimesh_llm_router.providers.base import (
    AnswerTask,
    Completion,
    Delta,
    GenerateTask,
    Message,
    Provider,
    ProviderContext,
    SummarizeTask,
)
from aimesh_llm_router.templates import Task
from aimesh_llm_router.tools import ToolCall

DETECTIONS = Counter(
    "aimesh_llm_privacy_detections_total",
    "Personal data values detected in requests to a model alias, by entity type and what "
    "was done (redacted or blocked). Values are never logged.",
    ["alias", "entity_type", "action"],
)

T = TypeVar("T")


def _message(message: Message, redact: Callable[[str], str]) -> Message:
    return replace(
        message,
        content=redact(message.content),
        tool_calls=tuple(
            replace(call, arguments=redact(call.arguments)) for call in message.tool_calls
        ),
    )


def _sources(sources: Sequence[Source], redact: Callable[[str], str]) -> tuple[Source, ...]:
    return tuple(replace(source, text=redact(source.text)) for source in sources)


class PrivacyGuard(Provider):
    """``inner`` under a ``redact`` or ``block`` policy, for the calls of one request."""

    def __init__(
        self, inner: Provider, policy: PrivacyPolicy, detector: Detector, alias: str
    ) -> None:
        if policy == "off":
            raise ValueError("a privacy guard needs the policy redact or block")
        self.inner = inner
        self.policy = policy
        self.alias = alias
        self._detector = detector
        # Reported as the provider that answered (replies, metrics, the extractive check).
        self.name = inner.name  # type: ignore[misc]
        # What the wrapped provider can do, so a guarded alias is offered the same requests.
        self.supports_tools = inner.supports_tools
        self.supports_response_format = inner.supports_response_format

    @classmethod
    def from_model(cls, spec: ModelSpec, context: ProviderContext) -> Self:
        raise TypeError("a privacy guard wraps a built provider; it is not built from a model")

    def describe(self) -> str:
        return self.inner.describe()

    def prompt_version(self, task: Task) -> str:
        return self.inner.prompt_version(task)

    async def _apply(self, build: Callable[[Callable[[str], str]], T]) -> tuple[T, Redaction]:
        """``build(redact)``: the task with its texts redacted, off the event loop; under
        ``block``, PersonalDataRefused when any text holds personal data."""
        redaction = Redaction(self._detector)
        task = await asyncio.to_thread(build, redaction.redact)
        action = "blocked" if self.policy == "block" else "redacted"
        for entity, count in redaction.found.items():
            DETECTIONS.labels(self.alias, entity, action).inc(count)
        if self.policy == "block" and redaction.found:
            types = redaction.entity_types
            raise PersonalDataRefused(
                f"the request holds personal data ({', '.join(types)}) that the privacy "
                f"policy of model {self.alias!r} does not allow to send to its provider; "
                "remove it or use a model that keeps data on the machine",
                list(types),
            )
        return task, redaction

    async def summarize(self, task: SummarizeTask) -> Completion:
        private, redaction = await self._summarize(task)
        return _restored(await self.inner.summarize(private), redaction)

    async def answer(self, task: AnswerTask) -> Completion:
        private, redaction = await self._answer(task)
        return _restored(await self.inner.answer(private), redaction)

    async def stream_summarize(self, task: SummarizeTask) -> AsyncIterator[Delta]:
        private, redaction = await self._summarize(task)
        async for delta in _restore_stream(self.inner.stream_summarize(private), redaction):
            yield delta

    async def stream_answer(self, task: AnswerTask) -> AsyncIterator[Delta]:
        private, redaction = await self._answer(task)
        async for delta in _restore_stream(self.inner.stream_answer(private), redaction):
            yield delta

    async def generate(self, task: GenerateTask) -> AsyncIterator[Delta]:
        private, redaction = await self._apply(
            lambda redact: replace(
                task,
                messages=[_message(message, redact) for message in task.messages],
                sources=_sources(task.sources, redact),
                question=redact(task.question),
                stop=tuple(redact(stop) for stop in task.stop),
            )
        )
        async for delta in _restore_stream(self.inner.generate(private), redaction):
            yield delta

    async def _summarize(self, task: SummarizeTask) -> tuple[SummarizeTask, Redaction]:
        return await self._apply(lambda redact: replace(task, text=redact(task.text)))

    async def _answer(self, task: AnswerTask) -> tuple[AnswerTask, Redaction]:
        return await self._apply(
            lambda redact: replace(
                task, question=redact(task.question), sources=_sources(task.sources, redact)
            )
        )

    async def aclose(self) -> None:
        """Nothing: the registry closes the provider it wraps."""


def _restored(completion: Completion, redaction: Redaction) -> Completion:
    return replace(completion, text=redaction.restore(completion.text))


def _restored_call(call: ToolCall, redaction: Redaction) -> ToolCall:
    return replace(call, arguments=redaction.restore(call.arguments))


async def _restore_stream(
    deltas: AsyncIterator[Delta], redaction: Redaction
) -> AsyncIterator[Delta]:
    """``deltas`` with the placeholders restored, also those split across deltas; the text
    held back at the end is released with the last delta."""
    restorer = redaction.stream()
    try:
        async for delta in deltas:
            text = restorer.feed(delta.text)
            if delta.finish_reason is not None or delta.usage is not None:
                text += restorer.flush()
            calls = tuple(_restored_call(call, redaction) for call in delta.tool_calls)
            if text or delta.finish_reason is not None or delta.usage is not None or calls:
                yield replace(delta, text=text, tool_calls=calls)
        rest = restorer.flush()
        if rest:
            yield Delta(text=rest)
    finally:
        close = getattr(deltas, "aclose", None)
        if close is not None:
            await close()
