"""What every task shares: its backends, usage accounting and the stream relay."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aimesh.llm.v1 import llm_pb2
from aimesh.retrieval.v1 import retrieval_pb2_grpc
from aimesh_common.errors import InvalidArgument
from aimesh_llm_router.conversations import ConversationStore
from aimesh_llm_router.metrics import TaskRecord
from aimesh_llm_router.models import ModelRegistry, ResolvedModel
from aimesh_llm_router.providers.base import Delta
from aimesh_llm_router.resilience import Resilience
from aimesh_llm_router.templates import PromptLibrary, Task
from aimesh_llm_router.tokens import NO_USAGE, Usage, count_tokens

log = logging.getLogger("aimesh.llm_router")

# Why an answer came from the extractor instead of the model asked (fallback_reason).
INVALID_CITATIONS = "invalid_citations"
# Share of the computed room filled with text (the token estimate and tokenizers differ).
TEXT_BUDGET_SHARE = 0.9


@dataclass(frozen=True)
class TaskDeps:
    """The backends the tasks run on, built once by the servicer."""

    models: ModelRegistry
    resilience: Resilience
    retrieval: retrieval_pb2_grpc.RetrievalServiceAsyncStub
    prompts: PromptLibrary
    backend_timeout: float
    conversations: ConversationStore
    max_conversation_messages: int
    # How long a stored Responses-API response is kept (seconds).
    responses_retention_seconds: float = 30 * 86_400.0


@dataclass(frozen=True)
class Reply:
    """A whole reply of a unary task, as the servicer returns it.

    ``provider`` and ``prompt_version`` are empty when the router answered itself.
    """

    text: str
    model: ResolvedModel
    usage: Usage
    provider: str
    prompt_version: str
    citations: list[llm_pb2.Citation] = field(default_factory=list)
    # "invalid_citations" when the extractive answer replaced ``replaced_model``'s.
    fallback_reason: str = ""
    replaced_model: str = ""

    @classmethod
    def answered(
        cls,
        text: str,
        model: ResolvedModel,
        usage: Usage,
        task: Task,
        citations: list[llm_pb2.Citation] | None = None,
        replaced: ResolvedModel | None = None,
    ) -> Reply:
        """A reply ``model`` produced for ``task`` (replacing ``replaced``'s answer)."""
        return cls(
            text=text,
            model=model,
            usage=usage,
            provider=model.provider.name,
            prompt_version=prompt_version(model, task),
            citations=citations or [],
            fallback_reason=INVALID_CITATIONS if replaced is not None else "",
            replaced_model=replaced.alias if replaced is not None else "",
        )


def usage_message(usage: Usage, model: ResolvedModel) -> llm_pb2.Usage:
    """Usage with its cost at the prices of the alias that answered."""
    return llm_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        estimated=usage.estimated,
        cost_usd=model.config.cost(usage.prompt_tokens, usage.completion_tokens),
    )


def prompt_version(model: ResolvedModel, task: Task) -> str:
    """The ``prompt_version`` of a reply ``model`` produced for ``task``."""
    return model.provider.prompt_version(task)


def max_tokens(requested: int, model: ResolvedModel) -> int:
    """0 means the alias's maximum; larger requests are capped at it."""
    limit = model.config.max_tokens
    return limit if requested == 0 else min(requested, limit)


def temperature(request: llm_pb2.GenerateRequest | llm_pb2.SendMessageRequest) -> float | None:
    """The request's temperature (None when unset), checked to lie in [0, 2]."""
    if not request.HasField("temperature"):
        return None
    if not 0.0 <= request.temperature <= 2.0:
        raise InvalidArgument(f"temperature must be between 0 and 2, got {request.temperature:g}")
    return request.temperature


# The template each metrics task name renders.
_TEMPLATE_OF: dict[str, Task] = {
    "answer": "qa",
    "summarize": "summarize",
    "chat": "chat",
    "generate": "chat",
}


def account(record: TaskRecord, model: ResolvedModel, usage: Usage) -> None:
    """Charge ``usage`` to the task's metrics, under the alias that answered and the
    version of the template it rendered."""
    template = _TEMPLATE_OF.get(record.task)
    version = prompt_version(model, template) if template is not None else ""
    record.answered_by(model.alias, model.provider.name, version)
    record.usage = usage
    record.cost_usd = model.config.cost(usage.prompt_tokens, usage.completion_tokens)


def charge_spent(record: TaskRecord, model: ResolvedModel, spent: Spent) -> None:
    """Charge a task that ended early (cancelled or failed) what it had spent, at
    ``model``'s prices; its labels stay those of a task that no alias completed."""
    record.usage = spent.usage
    record.cost_usd = model.config.cost(spent.usage.prompt_tokens, spent.usage.completion_tokens)


def log_usage(
    task: str, tenant_id: str, model: ResolvedModel, usage: Usage, **extra: object
) -> None:
    log.info(
        "task done",
        extra={
            "task": task,
            "tenant_id": tenant_id,
            "model": model.alias,
            "provider": model.provider.name,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "estimated": usage.estimated,
            **extra,
        },
    )


@dataclass
class Spent:
    """Tokens a streamed call has spent so far, sent with its messages (``spent``) so that
    a caller that stops reading (its client left) or whose stream fails charges them.

    The prompt is counted from the text the model is given (the rendered template adds a
    little) until the provider reports it; the completion is counted from the text sent.
    """

    prompt_tokens: int
    # Spent by earlier calls of the same task (the map calls of a long summary).
    before: Usage = NO_USAGE
    prompt_exact: bool = False
    completion_tokens: int = 0

    @classmethod
    def of_prompt(cls, *texts: str, before: Usage = NO_USAGE) -> Spent:
        return cls(sum(count_tokens(text) for text in texts), before)

    def see(self, delta: Delta) -> None:
        """Count a delta of the reply (and the prompt, if its provider reported it)."""
        if delta.prompt_tokens is not None:
            self.prompt_tokens, self.prompt_exact = delta.prompt_tokens, True
        if delta.text:
            self.completion_tokens += count_tokens(delta.text)

    @property
    def usage(self) -> Usage:
        counted = Usage(
            self.prompt_tokens,
            self.completion_tokens,
            estimated=not self.prompt_exact or self.completion_tokens > 0,
        )
        return self.before.plus(counted)


@dataclass
class StreamOutcome:
    """What a relayed stream produced: filled in as it runs."""

    usage: Usage = NO_USAGE
    model: ResolvedModel | None = None
    finish_reason: str = "stop"
    text: str = ""


async def relay(
    resilience: Resilience,
    chain: list[ResolvedModel],
    start: Callable[[ResolvedModel], AsyncIterator[Delta]],
    deadline: float,
    record: TaskRecord,
    outcome: StreamOutcome,
    spent: Spent,
    before_first: Callable[[ResolvedModel], list[llm_pb2.StreamEvent]] | None = None,
) -> AsyncIterator[llm_pb2.StreamEvent]:
    """Delta events of the first stream along ``chain``; fills ``outcome``.

    A first event carries the prompt's tokens (``spent``, counted by the caller) alone,
    and every delta event the tokens spent so far. ``before_first`` supplies events
    (e.g. sources) once the answering model is known. Usage and done are left to the
    caller, which may add citations before them.
    """
    started = False
    pieces: list[str] = []
    called = chain[0]
    yield llm_pb2.StreamEvent(spent=usage_message(spent.usage, called))
    try:
        async for model, delta in resilience.stream(chain, start, deadline):
            called = model
            if not started:
                started = True
                outcome.model = model
                for event in before_first(model) if before_first is not None else []:
                    yield event
            spent.see(delta)
            if delta.text:
                pieces.append(delta.text)
                yield llm_pb2.StreamEvent(delta=delta.text, spent=usage_message(spent.usage, model))
            if delta.finish_reason is not None:
                outcome.finish_reason = delta.finish_reason
            if delta.usage is not None:
                outcome.usage = outcome.usage.plus(delta.usage)
    except BaseException:
        # Cancelled (the caller left) or failed: the router's own metrics count what was
        # spent, as the caller does from the last ``spent``.
        charge_spent(record, called, spent)
        raise
    outcome.text = "".join(pieces)
    if outcome.model is not None:
        account(record, outcome.model, outcome.usage)


def closing_events(
    outcome: StreamOutcome, task: Task, replaced: ResolvedModel | None = None
) -> list[llm_pb2.StreamEvent]:
    """The usage and done events that end a relayed stream (``replaced``: the alias whose
    streamed answer a "replace" event replaced)."""
    model = outcome.model
    if model is None:  # an empty stream: nothing answered
        return [llm_pb2.StreamEvent(done=llm_pb2.StreamDone(finish_reason="stop"))]
    return [
        llm_pb2.StreamEvent(usage=usage_message(outcome.usage, model)),
        llm_pb2.StreamEvent(
            done=llm_pb2.StreamDone(
                model=model.alias,
                finish_reason=outcome.finish_reason,
                provider=model.provider.name,
                prompt_version=prompt_version(model, task),
                fallback_reason=INVALID_CITATIONS if replaced is not None else "",
                replaced_model=replaced.alias if replaced is not None else "",
            )
        ),
    ]
