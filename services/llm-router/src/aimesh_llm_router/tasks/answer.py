"""Answer and StreamAnswer: retrieve chunks of a collection, pack as many as fit the
model's context as numbered sources, and keep only the citations of sources given."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from google.protobuf import struct_pb2

from aimesh.llm.v1 import llm_pb2
from aimesh.retrieval.v1 import retrieval_pb2
from aimesh_common.errors import AimeshError, InvalidArgument, Unavailable
from aimesh_common.limits import DEFAULT_TOP_K, MAX_ASK_TOP_K
from aimesh_llm_router.citations import (
    Source,
    citations_valid,
    filter_citations,
    pack_sources,
)
from aimesh_llm_router.metrics import CITATION_FALLBACKS, observe
from aimesh_llm_router.models import EXTRACTIVE_PROVIDER, ResolvedModel
from aimesh_llm_router.providers.base import AnswerTask, Completion, Delta
from aimesh_llm_router.tasks.common import (
    Reply,
    Spent,
    StreamOutcome,
    TaskDeps,
    account,
    closing_events,
    log_usage,
    relay,
    usage_message,
)
from aimesh_llm_router.tasks.grounding import Found, citations, search_chunks
from aimesh_llm_router.tokens import NO_USAGE, estimate_tokens

log = logging.getLogger("aimesh.llm_router")

NO_MATCHING_DOCUMENTS = "I don't know: no documents in the collection match the question."
# The token estimate counts words and punctuation; real tokenizers produce roughly a
# third more tokens for English, so only this share of the computed room is filled.
SOURCE_BUDGET_SHARE = 0.75

Packer = Callable[[ResolvedModel], list[Source]]


@dataclass(frozen=True)
class Question:
    """A checked Answer request, with its alias chain and the first alias's source budget."""

    text: str
    tenant_id: str
    collection: str
    top_k: int
    search_filter: struct_pb2.Struct | None
    chain: list[ResolvedModel]
    budget: int
    # Rerank the sources (None: the collection's default).
    rerank: bool | None = None


def parse(deps: TaskDeps, request: llm_pb2.AnswerRequest) -> Question:
    """The request, checked: question, owner and collection present, ``top_k`` in range,
    the alias known and the question short enough to leave room for sources."""
    question = request.question.strip()
    if not question:
        raise InvalidArgument("question must not be empty")
    if not request.tenant_id:
        raise InvalidArgument("tenant_id must not be empty")
    if not request.collection:
        raise InvalidArgument("collection must not be empty")
    if request.top_k > MAX_ASK_TOP_K:
        raise InvalidArgument(f"top_k must be between 1 and {MAX_ASK_TOP_K}, got {request.top_k}")
    chain = deps.models.chain(request.model, "qa", request.tenant_id)
    budget = source_budget(deps, chain[0], question)
    if budget <= 0:
        raise _too_long(chain[0])
    return Question(
        text=question,
        tenant_id=request.tenant_id,
        collection=request.collection,
        top_k=request.top_k or DEFAULT_TOP_K,
        search_filter=request.filter if request.HasField("filter") else None,
        chain=chain,
        budget=budget,
        rerank=request.rerank if request.HasField("rerank") else None,
    )


async def answer(deps: TaskDeps, question: Question, time_remaining: float | None) -> Reply:
    """The answer with the citations it makes; the router's own "I don't know" when the
    collection has nothing matching (no provider asked)."""
    chain = question.chain
    model = chain[0]
    deadline = deps.resilience.deadline(model, time_remaining)
    with observe(model.alias, model.provider.name, "answer", question.tenant_id) as record:
        found = await _search(deps, question)
        chunks = found.chunks
        if not chunks:
            log_usage("answer", question.tenant_id, model, NO_USAGE)
            return Reply(NO_MATCHING_DOCUMENTS, model, NO_USAGE, provider="", prompt_version="")
        packed = packer(deps, question, chunks)

        async def run(candidate: ResolvedModel) -> Completion:
            return await candidate.provider.answer(_task(question, packed, candidate, found))

        model, result = await deps.resilience.complete(chain, run, deadline)
        sources = packed(model)
        account(record, model, result.usage)
    log_usage("answer", question.tenant_id, model, result.usage, sources=len(sources))
    replacement = await _extractive_instead(
        deps, chain, model, result.text, len(sources), run, deadline
    )
    if replacement is not None:
        extractor, extracted = replacement
        cited = filter_citations(extracted.text, {source.number for source in packed(extractor)})
        return Reply.answered(
            cited.text,
            extractor,
            result.usage.plus(extracted.usage),
            "qa",
            citations(cited.cited, chunks),
            replaced=model,
        )
    cited = filter_citations(result.text, {source.number for source in sources})
    return Reply.answered(cited.text, model, result.usage, "qa", citations(cited.cited, chunks))


async def _extractive_instead(
    deps: TaskDeps,
    chain: list[ResolvedModel],
    model: ResolvedModel,
    text: str,
    given: int,
    run: Callable[[ResolvedModel], Awaitable[Completion]],
    deadline: float,
) -> tuple[ResolvedModel, Completion] | None:
    """The extractive answer when ``model`` (not itself extractive) answered from ``given``
    sources with citations that do not validate: none, or a source never given.

    None keeps the model's answer: its citations are valid, no alias is extractive, or the
    extractor failed (the model's answer, with its invalid citations removed, is then
    better than no answer).
    """
    if model.provider.name == EXTRACTIVE_PROVIDER:
        return None
    if citations_valid(text, set(range(1, given + 1))):
        return None
    extractor = deps.models.extractive(chain)
    if extractor is None:
        return None
    try:
        result = await deps.resilience.complete([extractor], run, deadline)
    except AimeshError as error:
        log.warning(
            "the extractive answer could not replace an answer with invalid citations",
            extra={"model": model.alias, "fallback": extractor.alias, "error": str(error)},
        )
        return None
    CITATION_FALLBACKS.labels(model.alias, extractor.alias, "answer").inc()
    log.info(
        "answer with invalid citations replaced by the extractive answer",
        extra={"model": model.alias, "fallback": extractor.alias},
    )
    return result


async def stream_answer(
    deps: TaskDeps, question: Question, time_remaining: float | None
) -> AsyncIterator[llm_pb2.StreamEvent]:
    """Sources given, delta events, the citations made, then usage and done."""
    chain = question.chain
    model = chain[0]
    deadline = deps.resilience.deadline(model, time_remaining)
    outcome = StreamOutcome()
    with observe(model.alias, model.provider.name, "answer", question.tenant_id) as record:
        found = await _search(deps, question)
        chunks = found.chunks
        if not chunks:
            for event in _no_matching_events(model):
                yield event
            return
        packed = packer(deps, question, chunks)

        def start(candidate: ResolvedModel) -> AsyncIterator[Delta]:
            return candidate.provider.stream_answer(_task(question, packed, candidate, found))

        def sources(candidate: ResolvedModel) -> list[llm_pb2.StreamEvent]:
            given = range(1, len(packed(candidate)) + 1)
            items = citations(given, chunks)
            return [llm_pb2.StreamEvent(sources=llm_pb2.SourceList(items=items))]

        prompt = Spent.of_prompt(question.text, *(source.text for source in packed(model)))
        async for event in relay(
            deps.resilience, chain, start, deadline, record, outcome, prompt, sources
        ):
            yield event
    answered = outcome.model or model
    text = outcome.text
    replaced: ResolvedModel | None = None

    async def run(candidate: ResolvedModel) -> Completion:
        return await candidate.provider.answer(_task(question, packed, candidate, found))

    if outcome.model is not None:
        replacement = await _extractive_instead(
            deps, chain, answered, text, len(packed(answered)), run, deadline
        )
        if replacement is not None:
            replaced = answered
            answered, extracted = replacement
            text = extracted.text
            outcome.model = answered
            outcome.usage = outcome.usage.plus(extracted.usage)
    cited = filter_citations(text, set(range(1, len(packed(answered)) + 1)))
    if replaced is not None or cited.text != text.strip():
        # The whole reply when it is not the deltas: replaced by the extractive answer, or
        # citations of sources never given taken out (as the unary Answer returns it).
        yield llm_pb2.StreamEvent(replace=cited.text)
    yield llm_pb2.StreamEvent(citations=llm_pb2.SourceList(items=citations(cited.cited, chunks)))
    if outcome.model is not None:
        log_usage("answer", question.tenant_id, outcome.model, outcome.usage, streamed=True)
    for event in closing_events(outcome, "qa", replaced):
        yield event


def _no_matching_events(model: ResolvedModel) -> list[llm_pb2.StreamEvent]:
    """The router answers itself: no provider, no template."""
    return [
        llm_pb2.StreamEvent(sources=llm_pb2.SourceList()),
        llm_pb2.StreamEvent(delta=NO_MATCHING_DOCUMENTS),
        llm_pb2.StreamEvent(usage=usage_message(NO_USAGE, model)),
        llm_pb2.StreamEvent(done=llm_pb2.StreamDone(model=model.alias, finish_reason="stop")),
    ]


async def _search(deps: TaskDeps, question: Question) -> Found:
    return await search_chunks(
        deps,
        question.tenant_id,
        question.collection,
        question.text,
        question.top_k,
        question.search_filter,
        rerank=question.rerank,
    )


def _task(question: Question, packed: Packer, model: ResolvedModel, found: Found) -> AnswerTask:
    return AnswerTask(
        question=question.text,
        sources=packed(model),
        max_tokens=model.config.max_tokens,
        question_vector=found.query_vector,
    )


def source_budget(deps: TaskDeps, model: ResolvedModel, question: str) -> int:
    """Tokens of sources that fit next to ``question`` in one call of ``model``."""
    overhead = sum(
        estimate_tokens(str(message.content))
        for message in deps.prompts.qa.render(question=question, sources="")
    )
    room = model.config.context_window - model.config.max_tokens - overhead
    return math.floor(room * SOURCE_BUDGET_SHARE)


def packer(deps: TaskDeps, question: Question, chunks: list[retrieval_pb2.ScoredChunk]) -> Packer:
    """Sources packed per alias: fallbacks with a smaller context get fewer."""
    first = question.chain[0]
    texts = [chunk.text for chunk in chunks]
    packed = {first.alias: pack_sources(texts, question.budget)}
    if not packed[first.alias]:
        raise _too_long(first)

    def sources(model: ResolvedModel) -> list[Source]:
        if model.alias not in packed:
            room = source_budget(deps, model, question.text)
            packed[model.alias] = pack_sources(texts, room) if room > 0 else []
        if not packed[model.alias]:
            raise Unavailable(f"the question does not fit model {model.alias!r}")
        return list(packed[model.alias])

    return sources


def _too_long(model: ResolvedModel) -> InvalidArgument:
    return InvalidArgument(
        f"the question is too long for model {model.alias!r} "
        f"(context window {model.config.context_window} tokens)"
    )
