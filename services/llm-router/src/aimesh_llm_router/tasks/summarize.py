"""Summarize and StreamSummarize: a text too long for the model is first reduced by
map-reduce (chunks summarized in detail, the partial summaries joined), then summarized."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast, get_args

from aimesh.llm.v1 import llm_pb2
from aimesh_common.errors import InvalidArgument
from aimesh_llm_router.metrics import observe
from aimesh_llm_router.models import ResolvedModel
from aimesh_llm_router.providers.base import Completion, Delta, Style, SummarizeTask
from aimesh_llm_router.tasks.common import (
    TEXT_BUDGET_SHARE,
    Reply,
    Spent,
    StreamOutcome,
    TaskDeps,
    account,
    closing_events,
    log_usage,
    relay,
)
from aimesh_llm_router.tokens import NO_USAGE, Usage, count_tokens, split_by_tokens

MAX_WORDS = 10_000
# Map-reduce rounds before giving up on a text (each shrinks it by the summary ratio).
MAX_REDUCE_ROUNDS = 4
STYLES = get_args(Style)


@dataclass(frozen=True)
class SummaryRequest:
    """A checked Summarize request."""

    text: str
    style: Style
    max_words: int
    model: str
    tenant_id: str


def parse(request: llm_pb2.SummarizeRequest) -> SummaryRequest:
    """The request, checked: text present, a known style, ``max_words`` within bounds."""
    if not request.text.strip():
        raise InvalidArgument("text must not be empty")
    style = request.style or "brief"
    if style not in STYLES:
        raise InvalidArgument(f"style must be one of {', '.join(STYLES)}, got {request.style!r}")
    if request.max_words > MAX_WORDS:
        raise InvalidArgument(f"max_words must be at most {MAX_WORDS}")
    return SummaryRequest(
        text=request.text,
        style=cast(Style, style),
        max_words=request.max_words,
        model=request.model,
        tenant_id=request.tenant_id,
    )


async def summarize(deps: TaskDeps, request: SummaryRequest, time_remaining: float | None) -> Reply:
    """The summary of ``request.text`` from the first alias of its chain that answers."""
    chain = deps.models.chain(request.model, "summarize", request.tenant_id)
    first = chain[0]
    deadline = deps.resilience.deadline(first, time_remaining)
    with observe(first.alias, first.provider.name, "summarize", request.tenant_id) as record:
        text, spent = await reduce_to_fit(deps, chain, request.text, deadline)

        async def run(model: ResolvedModel) -> Completion:
            return await model.provider.summarize(
                _task(model, text, request.style, request.max_words)
            )

        model, result = await deps.resilience.complete(chain, run, deadline)
        usage = spent.plus(result.usage)
        account(record, model, usage)
    log_usage("summarize", request.tenant_id, model, usage)
    return Reply.answered(result.text, model, usage, "summarize")


async def stream_summary(
    deps: TaskDeps, request: SummaryRequest, time_remaining: float | None
) -> AsyncIterator[llm_pb2.StreamEvent]:
    """The summary as delta events, then usage and done."""
    chain = deps.models.chain(request.model, "summarize", request.tenant_id)
    first = chain[0]
    deadline = deps.resilience.deadline(first, time_remaining)
    with observe(first.alias, first.provider.name, "summarize", request.tenant_id) as record:
        text, spent = await reduce_to_fit(deps, chain, request.text, deadline)
        outcome = StreamOutcome(usage=spent)

        def start(model: ResolvedModel) -> AsyncIterator[Delta]:
            return model.provider.stream_summarize(
                _task(model, text, request.style, request.max_words)
            )

        prompt = Spent.of_prompt(text, before=spent)
        async for event in relay(deps.resilience, chain, start, deadline, record, outcome, prompt):
            yield event
    if outcome.model is not None:
        log_usage("summarize", request.tenant_id, outcome.model, outcome.usage, streamed=True)
    for event in closing_events(outcome, "summarize"):
        yield event


def _task(model: ResolvedModel, text: str, style: Style, words: int) -> SummarizeTask:
    return SummarizeTask(
        text=text, style=style, max_words=words, max_tokens=model.config.max_tokens
    )


def text_room(deps: TaskDeps, model: ResolvedModel) -> int:
    """Tokens of text that fit one summarize call of ``model``."""
    overhead = sum(
        count_tokens(str(message.content))
        for message in deps.prompts.summarize.render(
            text="", style_instructions="", max_words=MAX_WORDS
        )
    )
    room = model.config.context_window - model.config.max_tokens - overhead
    return max(0, math.floor(room * TEXT_BUDGET_SHARE))


async def reduce_to_fit(
    deps: TaskDeps, chain: list[ResolvedModel], text: str, deadline: float
) -> tuple[str, Usage]:
    """Map-reduce: while ``text`` exceeds the context, summarize it chunk by chunk.

    Each chunk is summarized in detail (map) and the partial summaries, joined, become
    the new text; the caller's summary of that is the reduce step. Returns the text
    that fits and the usage spent on the map calls.
    """
    room = text_room(deps, chain[0])
    if room <= 0:
        raise InvalidArgument(
            f"model {chain[0].alias!r} has no room for text (context window "
            f"{chain[0].config.context_window}, max_tokens {chain[0].config.max_tokens})"
        )
    spent = NO_USAGE
    for _ in range(MAX_REDUCE_ROUNDS):
        if count_tokens(text) <= room:
            return text, spent
        partials: list[str] = []
        for piece in split_by_tokens(text, room):

            async def run(model: ResolvedModel, piece: str = piece) -> Completion:
                return await model.provider.summarize(_task(model, piece, "detailed", 0))

            _, result = await deps.resilience.complete(chain, run, deadline)
            spent = spent.plus(result.usage)
            partials.append(result.text)
        text = "\n\n".join(partials)
    if count_tokens(text) > room:
        raise InvalidArgument("the text is too long to summarize with this model")
    return text, spent
