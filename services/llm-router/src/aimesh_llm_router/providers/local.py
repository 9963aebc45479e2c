"""The local provider: extractive summaries and answers, no model key, no hosted LLM.

It works on sentences embedded by aimesh's own embedding service:

- summarize picks the most central sentences (closest to the centroid of all sentence
  vectors, which ranks them like their mean cosine similarity to the others) within the
  word budget, skipping near-duplicates, and prints them in document order;
- answer quotes the source sentences most similar to the question (above a threshold,
  at most three), each followed by its source number; with none it says it does not know;
  a "which option ...?" question is matched on what the option is asked to do (the
  question without its frame and command) and answered by a sentence naming an option;
- generate answers the last user message the same way from the earlier messages (and
  from the statements before a question in the last message itself), and says plainly
  that it cannot compose free text when there is nothing to quote.

It never invents text, which makes it a dependable default for development, tests and
air-gapped installs; the output quality is that of extractive summarization.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import numpy.typing as npt

from aimesh_common.embedding_client import EmbeddingClient
from aimesh_common.errors import InvalidArgument
from aimesh_llm_router.citations import render_sources
from aimesh_llm_router.modelconfig import ModelSpec
from aimesh_llm_router.providers.base import (
    AnswerTask,
    Completion,
    Delta,
    FinishReason,
    GenerateTask,
    Provider,
    ProviderContext,
    Style,
    SummarizeTask,
)
from aimesh_llm_router.sentences import Sentence, split_units
from aimesh_llm_router.tokens import Usage, estimate_tokens

I_DONT_KNOW = "I don't know: the sources do not answer this question."
NOTHING_TO_QUOTE = (
    "The local extractive provider cannot compose free text: it can only quote earlier "
    "messages of this conversation, and there are none to quote from."
)
NOTHING_RELEVANT = (
    "The local extractive provider cannot compose free text, and no earlier message of "
    "this conversation answers this."
)

# Sentences per style, and the style's word budget when the request gives none.
STYLE_LIMITS: dict[Style, tuple[int, int]] = {
    "brief": (3, 60),
    "bullets": (5, 100),
    "detailed": (8, 200),
}
MAX_QUOTES = 3
# A quoted sentence must also be within this margin of the best one, so one strong match
# is not padded with loosely related sentences that merely pass the threshold.
RELATIVE_MARGIN = 0.2
# Weight of the shared-rare-words bonus (0-1) next to cosine similarity when ranking.
LEXICAL_WEIGHT = 0.3
# Bonus for a sentence of the definition of a term the question names ("What does
# --recursive do?" -> the sentences of "-r, --recursive"), more for the first sentence of
# that definition, which states what the term is or does; a little for the first
# sentence of any definition or paragraph, which usually says what the rest qualifies.
TERM_WEIGHT = 0.25
TERM_LEAD_WEIGHT = 0.1
LEAD_WEIGHT = 0.03
# Bonus for a sentence of the kind the question asks for: a date for "when" and an
# exception name for "which exception" (a sentence without one cannot answer it, however
# close its topic), a number for "how many", an option for "which option", a defined
# term for "which parameter".
DATE_WEIGHT = 0.3
NUMBER_WEIGHT = 0.15
# "Which option ...?" is answered only by a sentence that names an option: an option's
# definition or a sentence that mentions a flag.
OPTION_WEIGHT = 0.2
PARAMETER_WEIGHT = 0.1
# For an option question, weights of how well a sentence matches what the option is asked
# to do (the question without its frame and command: see _asked_clause), by meaning and
# by shared rare words of the option's description.
CLAUSE_WEIGHT = 0.5
CLAUSE_LEXICAL_WEIGHT = 0.3
# Sentences closer than this to an already chosen one add nothing to a summary.
MIN_SUMMARY_WORDS = 4
DUPLICATE_SIMILARITY = 0.92
MAX_SENTENCES = 2000

_WORD_PIECES = re.compile(r"\S+\s*")
_FINAL_PUNCTUATION = re.compile(r"([.!?]+)([\"')\]]*)$")
_WORD = re.compile(r"[^\W_]+")
_STOPWORDS = frozenset(
    (  # noqa: SIM905 - a word list reads better as text
        "about after also and are been before but can could did does for from had has have "
        "her his how into its more not now off one our out over she than that the their them "
        "then there these they this those too very was were what when where which while who "
        "whom why will with would you your"
    ).split()
)


def _stems(text: str) -> set[str]:
    """Crude stems of the content words: "completed", "completion" -> "comple"."""
    stems = set()
    for word in _WORD.findall(text.lower()):
        if len(word) < 3 or word in _STOPWORDS:
            continue
        stems.add((word[:-1] if len(word) > 3 and word.endswith("s") else word)[:6])
    return stems


def _lexical_overlap(question: str, sentences: Sequence[str]) -> npt.NDArray[np.float64]:
    """Share of the question's content words (IDF-weighted over ``sentences``) in each."""
    wanted = _stems(question)
    if not wanted or not sentences:
        return np.zeros(len(sentences))
    sentence_stems = [_stems(sentence) for sentence in sentences]
    count = len(sentences)
    weights = {
        stem: math.log((count + 1) / (1 + sum(stem in stems for stems in sentence_stems))) + 1
        for stem in wanted
    }
    total = sum(weights.values())
    return np.array(
        [sum(weights[stem] for stem in wanted & stems) / total for stems in sentence_stems]
    )


# Names a question can ask about verbatim: flags ("-r", "--no-clobber"), identifiers
# ("chunk_size", "max_tokens", "os.path.join", "GREP_COLORS"), code spans.
_FLAG = re.compile(r"(?<![\w-])--?[A-Za-z0-9][\w-]*")
_IDENTIFIER = re.compile(
    r"\b[A-Za-z_]\w*(?:[._]\w+)+\b"  # snake_case, dotted.names
    r"|\b[A-Za-z][a-z]+[A-Z]\w*\b"  # camelCase, PascalCase
    r"|\b[A-Z][A-Z0-9_]{2,}\b"  # CONSTANTS, ENVIRONMENT_VARIABLES
)
_CODE = re.compile(r"`([^`]+)`")
_WORD_OR_DOTTED = re.compile(r"[a-z_][\w]*(?:\.[a-z_]\w*)*")
_OPTION_QUESTION = re.compile(r"\b(?:which|what)\b[^?]*\b(?:option|flag|switch)s?\b", re.I)
_PARAMETER_QUESTION = re.compile(
    r"\b(?:which|what)\b[^?]*\b(?:parameter|argument|keyword|setting|field|attribute)s?\b",
    re.I,
)
_EXCEPTION_QUESTION = re.compile(
    r"\b(?:which|what)\b[^?]*\b(?:exception|error)s?\b|\braises?\b", re.I
)
_EXCEPTION = re.compile(r"\b[A-Z]\w*(?:Error|Exception|Warning|Exit|Interrupt)\b")
_NUMBER_QUESTION = re.compile(
    r"\bhow (?:many|much|long|large|big|old|often|far|tall|high|wide|deep|heavy)\b"
    r"|\bwhat (?:number|size|percentage|port|version|limit|maximum|minimum)\b|\bdefault\b",
    re.I,
)
_DATE_QUESTION = re.compile(r"^\s*when\b|\b(?:what|which) (?:year|date|day|month|century)\b", re.I)
_DIGITS = re.compile(r"\d")
_DATE = re.compile(
    r"\b(?:1[0-9]{3}|20[0-9]{2})\b|\b(?:January|February|March|April|May|June|July|August|"
    r"September|October|November|December)\b"
)


# "Which grep option selects whole words?": what the option does is asked after the noun
# ("selects whole words"); the command, the noun and the question's frame say nothing
# about which of the command's options that is.
_OPTION_NOUN = re.compile(r"\b(?:options?|flags?|switch(?:es)?)\b", re.I)
_CLAUSE_FRAME = re.compile(
    r"^(?:(?:of|in|for|to)\s+\S+?[,:]?\s+)?"  # "of grep", "in git-rm,"
    r"(?:(?:should|must|do|can|could|would)\s+(?:i|you|we)\s+(?:pass|use|give|add|set)"
    r"(?:\s+to)?\s+|(?:that|which|to|will|would|can|could|lets?\s+(?:me|you))\s+)*",
    re.I,
)


def _asked_clause(question: str) -> str:
    """What an option question asks the option to do, without its frame ("" if none)."""
    if not _OPTION_QUESTION.search(question) or _FLAG.search(question):
        return ""  # no option question, or one about a flag it names
    noun = _OPTION_NOUN.search(question)
    if noun is None:
        return ""
    clause = _CLAUSE_FRAME.sub("", question[noun.end() :].strip(" ,:?")).strip(" ,:?")
    return clause if _stems(clause) else ""


def _named(question: str) -> set[str]:
    """The flags, identifiers and code spans ``question`` names, lower case."""
    names = {match.lower() for match in _FLAG.findall(question)}
    names.update(match.lower() for match in _IDENTIFIER.findall(question))
    names.update(match.strip().lower() for match in _CODE.findall(question))
    return {name for name in names if len(name.strip("-")) >= 1}


def _term_names(term: str) -> set[str]:
    """``-f FILE, --file=FILE`` -> {"-f", "--file", "file"}: what a question may call it."""
    lowered = term.lower()
    names = set(_FLAG.findall(lowered))
    names.update(match.lstrip("-") for match in list(names) if match.startswith("--"))
    names.update(part.strip() for part in re.split(r"[,/]|\s+or\s+", lowered) if part.strip())
    names.update(re.split(r"[\s(:=\[]", lowered.strip(), maxsplit=1)[:1])
    # A signature names its function and parameters: "HelpFormatter(prog, width=None)".
    names.update(_WORD_OR_DOTTED.findall(lowered))
    return names


def _answer_types(question: str, units: Sequence[Sentence]) -> npt.NDArray[np.float64]:
    """Bonus of each unit for being of the kind the question asks for (0 when untyped)."""
    wants_option = bool(_OPTION_QUESTION.search(question))
    wants_number = bool(_NUMBER_QUESTION.search(question))
    wants_date = bool(_DATE_QUESTION.search(question))
    wants_parameter = bool(_PARAMETER_QUESTION.search(question))
    wants_exception = bool(_EXCEPTION_QUESTION.search(question))
    bonus = np.zeros(len(units))
    for index, unit in enumerate(units):
        value = 0.0
        if wants_option and _FLAG.search(unit.text):
            value += OPTION_WEIGHT
        if wants_parameter and unit.term:
            value += PARAMETER_WEIGHT
        if wants_exception and _EXCEPTION.search(unit.text):
            value += DATE_WEIGHT
        if wants_number and _DIGITS.search(unit.text.removeprefix(unit.term)):
            value += NUMBER_WEIGHT
        if wants_date and _DATE.search(unit.text):
            value += DATE_WEIGHT
        bonus[index] = value
    return bonus


def _structure_bonus(question: str, units: Sequence[Sentence]) -> npt.NDArray[np.float64]:
    """Bonuses for defining what the question names and for lead sentences."""
    named = _named(question)
    bonus = np.zeros(len(units))
    for index, unit in enumerate(units):
        value = LEAD_WEIGHT if unit.lead else 0.0
        if unit.term and named and named & _term_names(unit.term):
            value += TERM_WEIGHT + (TERM_LEAD_WEIGHT if unit.lead else 0.0)
        bonus[index] = value
    return bonus


Matrix = npt.NDArray[np.float32]


def _unit_rows(vectors: Sequence[Sequence[float]]) -> Matrix:
    """The vectors as the L2-normalized rows of a matrix, so dot products are cosines.

    The embedding service normalizes already; normalizing again costs nothing and keeps
    the similarities right whatever the backend does.
    """
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    normalized: Matrix = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalized


def _words(text: str) -> int:
    return len(text.split())


def _truncate_words(text: str, max_words: int) -> str:
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words]) + "\u2026"


def _cite(sentence: str, number: int) -> str:
    """``Paris is the capital.`` -> ``Paris is the capital [1].``"""
    match = _FINAL_PUNCTUATION.search(sentence)
    if match is None:
        return f"{sentence} [{number}]."
    return f"{sentence[: match.start()]} [{number}]{match.group(1)}{match.group(2)}"


@dataclass(frozen=True)
class _Quote:
    text: str
    source: int
    score: float
    typed: bool = False


class LocalProvider(Provider):
    """Extractive provider backed by the embedding service."""

    name = "local"

    def __init__(self, embedder: EmbeddingClient, threshold: float) -> None:
        self._embedder = embedder
        self._threshold = threshold

    @classmethod
    def keeps_data_local(cls, spec: ModelSpec) -> bool:
        """Quotes from the sources in this process: nothing leaves the machine."""
        return True

    @classmethod
    def from_model(cls, spec: ModelSpec, context: ProviderContext) -> Self:
        if context.embedding is None:
            raise ValueError("the local provider needs the embedding service")
        threshold = spec.options.get("answer_threshold", context.settings.local_answer_threshold)
        if not isinstance(threshold, int | float) or not -1.0 <= threshold <= 1.0:
            raise ValueError("options.answer_threshold of the local provider must be in [-1, 1]")
        return cls(context.embedding, float(threshold))

    def describe(self) -> str:
        return (
            "local extractive provider: quotes the most relevant sentences of the input, "
            "composes no free text"
        )

    @staticmethod
    def _sentences(text: str) -> list[str]:
        return [unit.text for unit in LocalProvider._units(text)]

    @staticmethod
    def _units(text: str) -> list[Sentence]:
        sentences = split_units(text)
        if len(sentences) > MAX_SENTENCES:
            raise InvalidArgument(
                f"text has {len(sentences)} sentences; the local provider handles at most "
                f"{MAX_SENTENCES}"
            )
        return sentences

    async def summarize(self, task: SummarizeTask) -> Completion:
        sentences = self._sentences(task.text)
        max_sentences, default_words = STYLE_LIMITS[task.style]
        max_words = task.max_words or default_words
        max_sentences = max(max_sentences, max_words // 25)
        chosen = await self._central(sentences, max_sentences, max_words)
        if task.style == "bullets":
            summary = "\n".join(f"- {sentence}" for sentence in chosen)
        else:
            summary = " ".join(chosen)
        return Completion(text=summary, usage=Usage.estimate(task.text, summary))

    async def _central(self, sentences: list[str], max_sentences: int, max_words: int) -> list[str]:
        """The most central sentences that fit the budget, in document order."""
        if not sentences:
            return []
        if len(sentences) == 1:
            return [_truncate_words(sentences[0], max_words)]
        vectors = _unit_rows(await self._embedder.embed(sentences))
        centroid = vectors.mean(axis=0)
        centrality = vectors @ centroid
        picked: list[int] = []
        words_left = max_words
        # Fragments ("[FILE...]", a lone label) say nothing on their own in a summary.
        shortest = (
            MIN_SUMMARY_WORDS if any(_words(s) >= MIN_SUMMARY_WORDS for s in sentences) else 0
        )
        for index in np.argsort(-centrality, kind="stable"):
            if len(picked) >= max_sentences:
                break
            count = _words(sentences[index])
            if count > words_left or count < shortest:
                continue
            if picked and float(np.max(vectors[picked] @ vectors[index])) > DUPLICATE_SIMILARITY:
                continue
            picked.append(int(index))
            words_left -= count
        if not picked:
            best = int(np.argmax(centrality))
            return [_truncate_words(sentences[best], max_words)]
        return [sentences[index] for index in sorted(picked)]

    async def _quotes(
        self,
        question: str,
        passages: Sequence[tuple[int, str]],
        question_vector: Sequence[float] = (),
    ) -> list[_Quote]:
        """Sentences of the passages that best answer ``question``, best first.

        ``question_vector`` is the question's embedding when the caller has it already
        (retrieval computed it for the search); the question is embedded only without it.

        A sentence qualifies when its cosine similarity to the question reaches the
        threshold. Qualifying sentences are ranked by that similarity plus a bonus for
        sharing the question's rarer words: dense similarity alone is dominated by the
        topic ("Eiffel Tower ...") and misses the sentence with the asked-for fact
        ("... completed in 1889").
        """
        candidates: list[tuple[int, Sentence]] = []
        for number, text in passages:
            candidates.extend((number, unit) for unit in self._units(text))
        if not candidates:
            return []
        if len(candidates) > MAX_SENTENCES:
            raise InvalidArgument(
                f"the input has {len(candidates)} sentences; the local provider handles at "
                f"most {MAX_SENTENCES}"
            )
        units = [unit for _, unit in candidates]
        texts = [unit.text for unit in units]
        # An option question is also matched on what the option is asked to do: the
        # question's similarity is dominated by the command it names, shared by all of
        # that command's options. The clause is embedded in the same call as the texts.
        clause = _asked_clause(question)
        extra = [clause] if clause else []
        dimension = (await self._embedder.info()).dimension
        if len(question_vector) == dimension:
            embedded = await self._embedder.embed([*texts, *extra])
            vectors = _unit_rows([question_vector, *embedded])
        else:
            # None given, or one of another model (its similarities would mean nothing).
            vectors = _unit_rows(await self._embedder.embed([question, *texts, *extra]))
        text_vectors = vectors[1 : 1 + len(texts)]
        similarity = text_vectors @ vectors[0]
        ranking = (
            similarity
            + LEXICAL_WEIGHT * _lexical_overlap(question, texts)
            + _structure_bonus(question, units)
            + (typed := _answer_types(question, units))
        )
        if clause:
            clause_similarity = text_vectors @ vectors[-1]
            descriptions = [unit.text.removeprefix(unit.term) for unit in units]
            ranking = (
                ranking
                + CLAUSE_WEIGHT * clause_similarity
                + CLAUSE_LEXICAL_WEIGHT * _lexical_overlap(clause, descriptions)
            )
            similarity = np.maximum(similarity, clause_similarity)
        qualifying = similarity >= self._threshold
        if not qualifying.any():
            return []
        floor = float(np.max(ranking[qualifying])) - RELATIVE_MARGIN
        quotes: list[_Quote] = []
        seen: set[str] = set()
        for index in np.argsort(-ranking, kind="stable"):
            score = float(ranking[index])
            if score < floor or len(quotes) >= MAX_QUOTES:
                break
            number, unit = candidates[index]
            text = unit.text
            if not qualifying[index] or text.lower() in seen:
                continue
            seen.add(text.lower())
            quotes.append(_Quote(text=text, source=number, score=score, typed=typed[index] > 0))
        # A quote of the asked-for kind (the one with the date, for "when") leads.
        return sorted(quotes, key=lambda quote: not quote.typed)

    async def answer(self, task: AnswerTask) -> Completion:
        quotes = await self._quotes(
            task.question,
            [(source.number, source.text) for source in task.sources],
            task.question_vector,
        )
        if quotes:
            text = " ".join(_cite(quote.text, quote.source) for quote in quotes)
        else:
            text = I_DONT_KNOW
        prompt = f"{task.question}\n{render_sources(task.sources)}"
        return Completion(text=text, usage=Usage.estimate(prompt, text))

    async def generate(self, task: GenerateTask) -> AsyncIterator[Delta]:
        reply = await self._reply(task)
        prompt = "\n".join(message.content for message in task.messages)
        sent: list[str] = []
        used = 0
        finish: FinishReason = "stop"
        for piece in _WORD_PIECES.findall(reply):
            cost = estimate_tokens(piece)
            if used + cost > task.max_tokens:
                finish = "length"
                break
            used += cost
            sent.append(piece)
            yield Delta(text=piece)
        completion = "".join(sent)
        yield Delta(
            text="",
            finish_reason=finish,
            usage=Usage.estimate(prompt, completion),
        )

    async def _reply(self, task: GenerateTask) -> str:
        if task.sources:
            # A grounded conversation: answer as for a question, citing the sources.
            quotes = await self._quotes(
                task.question,
                [(source.number, source.text) for source in task.sources],
                task.question_vector,
            )
            if not quotes:
                return I_DONT_KNOW
            return " ".join(_cite(quote.text, quote.source) for quote in quotes)
        question = task.messages[-1].content
        passages = [
            (index, message.content)
            for index, message in enumerate(task.messages[:-1])
            if message.content.strip()
        ]
        # "The sky was grey. What colour was it?" carries its own context: when the last
        # message asks a question, its other sentences may be quoted too.
        own = self._sentences(question)
        if any(sentence.endswith("?") for sentence in own):
            context = " ".join(sentence for sentence in own if not sentence.endswith("?"))
            if context:
                passages.append((len(task.messages) - 1, context))
        if not passages:
            return NOTHING_TO_QUOTE
        quotes = await self._quotes(question, passages)
        # Quote in conversation order so the reply reads like the original text.
        ordered = sorted(quotes, key=lambda quote: quote.source)
        return " ".join(quote.text for quote in ordered) if quotes else NOTHING_RELEVANT
