"""The local extractive provider against the real embedding server (real model)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import grpc
import pytest

from aimesh_common.embedding_client import EmbeddingClient
from aimesh_common.errors import InvalidArgument, Unavailable
from aimesh_llm_router.citations import Source
from aimesh_llm_router.config import Settings
from aimesh_llm_router.providers import LocalProvider, ProviderContext
from aimesh_llm_router.providers.base import AnswerTask, GenerateTask, Message, SummarizeTask
from aimesh_llm_router.providers.local import (
    I_DONT_KNOW,
    MAX_SENTENCES,
    NOTHING_RELEVANT,
    NOTHING_TO_QUOTE,
    _asked_clause,
)
from aimesh_llm_router.sentences import split_sentences
from aimesh_llm_router.templates import load_prompt_library
from tests.common.embed_calls import recorded_channel
from tests.conftest import free_port

# A text about honeybees with two off-topic sentences the summary must leave out.
BEES = [
    "Honeybees live in large colonies with a single queen.",
    "The stock market closed slightly higher on Tuesday after a volatile session.",
    "Worker bees collect nectar and pollen from flowers to feed the colony.",
    "Inside the hive, bees turn nectar into honey and store it in wax combs.",
    "My neighbour repainted his garage door a bright shade of green.",
    "Beekeepers harvest surplus honey from the hives in late summer.",
]


def local_provider(addr: str) -> tuple[LocalProvider, grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(addr)
    settings = Settings(port=0, metrics_port=None, llm_provider="local")
    context = ProviderContext(
        settings=settings,
        prompts=load_prompt_library(),
        embedding=EmbeddingClient(channel, timeout=settings.backend_timeout_seconds),
    )
    return LocalProvider.from_context(context), channel


@pytest.fixture(scope="module")
async def provider(embedding_addr: str) -> AsyncIterator[LocalProvider]:
    local, channel = local_provider(embedding_addr)
    yield local
    await channel.close()


def test_sentence_splitting() -> None:
    text = (
        "Dr. Smith went to Washington. He met Mr. Jones, e.g. at noon! Really? "
        "The U.S. economy grew 3.5% in 2020.\nWrapped lines\ncontinue here.\n\n"
        "- first item\n- second item. Still second.\n1. numbered"
    )
    assert split_sentences(text) == [
        "Dr. Smith went to Washington.",
        "He met Mr. Jones, e.g. at noon!",
        "Really?",
        "The U.S. economy grew 3.5% in 2020.",
        "Wrapped lines continue here.",
        "first item",
        "second item.",
        "Still second.",
        "numbered",
    ]


async def test_summary_picks_central_sentences_in_document_order(
    provider: LocalProvider,
) -> None:
    result = await provider.summarize(
        SummarizeTask(text=" ".join(BEES), style="brief", max_words=0, max_tokens=100)
    )
    chosen = split_sentences(result.text)
    assert len(chosen) == 3
    assert all(sentence in BEES for sentence in chosen)
    assert BEES[1] not in chosen
    assert BEES[4] not in chosen
    assert chosen == sorted(chosen, key=BEES.index)
    assert result.usage.estimated is True
    assert result.usage.completion_tokens > 0


async def test_bullets_and_word_budget(provider: LocalProvider) -> None:
    result = await provider.summarize(
        SummarizeTask(text="\n".join(BEES), style="bullets", max_words=25, max_tokens=100)
    )
    lines = result.text.splitlines()
    assert lines
    assert all(line.startswith("- ") for line in lines)
    assert all(line[2:] in BEES for line in lines)
    assert sum(len(line[2:].split()) for line in lines) <= 25
    assert BEES[1] not in result.text


async def test_detailed_keeps_more_sentences(provider: LocalProvider) -> None:
    brief = await provider.summarize(
        SummarizeTask(text=" ".join(BEES), style="brief", max_words=0, max_tokens=100)
    )
    detailed = await provider.summarize(
        SummarizeTask(text=" ".join(BEES), style="detailed", max_words=0, max_tokens=100)
    )
    assert len(split_sentences(detailed.text)) > len(split_sentences(brief.text))


async def test_a_budget_smaller_than_any_sentence_truncates_the_most_central(
    provider: LocalProvider,
) -> None:
    result = await provider.summarize(
        SummarizeTask(text=" ".join(BEES), style="brief", max_words=4, max_tokens=100)
    )
    assert result.text.endswith("\u2026")
    assert len(result.text.split()) == 4


SOURCES = [
    Source(1, "The Eiffel Tower is in Paris. It was completed in 1889 for the World's Fair."),
    Source(2, "Mount Everest is the highest mountain on Earth. It lies in the Himalayas."),
    Source(3, "Python is a programming language created by Guido van Rossum."),
]


async def test_answer_cites_the_source_that_answers(provider: LocalProvider) -> None:
    result = await provider.answer(
        AnswerTask(
            question="Which is the highest mountain on Earth?", sources=SOURCES, max_tokens=50
        )
    )
    assert "Mount Everest is the highest mountain on Earth [2]." in result.text
    assert set(re.findall(r"\[(\d+)\]", result.text)) == {"2"}
    assert result.usage.estimated is True


async def test_answer_finds_the_fact_not_just_the_topic(provider: LocalProvider) -> None:
    # Dense similarity alone ranks the sentences naming the tower above the one with the
    # date; the shared rare word "completed" must bring that one in.
    eiffel = Source(
        1,
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. "
        "It was designed by the engineering company of Gustave Eiffel. "
        "The tower was completed in 1889 as the entrance to the World's Fair. "
        "It is 330 metres tall and was the tallest man-made structure for 41 years.",
    )
    result = await provider.answer(
        AnswerTask(
            question="When was the Eiffel Tower completed?",
            sources=[eiffel, *SOURCES[1:]],
            max_tokens=50,
        )
    )
    assert "The tower was completed in 1889 as the entrance to the World's Fair [1]." in result.text
    assert "[2]" not in result.text
    assert "[3]" not in result.text


async def test_a_question_vector_given_is_used_instead_of_embedding_the_question(
    embedding_addr: str,
) -> None:
    """Retrieval embedded the question for the search already: with that vector, the
    provider embeds only the sources' sentences, and answers exactly as without it."""
    question = "When was the Eiffel Tower completed?"
    channel, calls = recorded_channel(embedding_addr)
    try:
        client = EmbeddingClient(channel, timeout=30)
        local = LocalProvider(client, Settings(port=0, metrics_port=None).local_answer_threshold)
        [vector] = await client.embed([question])
        calls.calls.clear()
        given = await local.answer(
            AnswerTask(question=question, sources=SOURCES, max_tokens=50, question_vector=vector)
        )
        assert calls.calls
        assert not calls.containing(question)
        embedded = await local.answer(AnswerTask(question=question, sources=SOURCES, max_tokens=50))
        assert len(calls.containing(question)) == 1
        assert given.text == embedded.text
        assert given.text.startswith("The Eiffel Tower")
        # A vector of another model (another dimension) is not comparable: ignored.
        calls.calls.clear()
        other = await local.answer(
            AnswerTask(question=question, sources=SOURCES, max_tokens=50, question_vector=[1.0])
        )
        assert other.text == embedded.text
        assert len(calls.containing(question)) == 1
        # A grounded conversation turn takes the vector in the same way.
        calls.calls.clear()
        deltas = [
            delta
            async for delta in local.generate(
                GenerateTask(
                    messages=[Message("user", question)],
                    max_tokens=50,
                    temperature=None,
                    sources=tuple(SOURCES),
                    question=question,
                    question_vector=vector,
                )
            )
        ]
        assert "".join(delta.text for delta in deltas) == embedded.text
        assert calls.calls
        assert not calls.containing(question)
    finally:
        await channel.close()


async def test_answer_says_i_dont_know_for_an_unrelated_question(provider: LocalProvider) -> None:
    result = await provider.answer(
        AnswerTask(question="How do I bake sourdough bread?", sources=SOURCES, max_tokens=50)
    )
    assert result.text == I_DONT_KNOW
    assert "[" not in result.text


async def test_generate_quotes_earlier_messages_word_by_word(provider: LocalProvider) -> None:
    task = GenerateTask(
        messages=[
            Message("user", "Notes: The meeting is on Friday at 10am. Lunch will be pizza."),
            Message("assistant", "Noted."),
            Message("user", "When is the meeting?"),
        ],
        max_tokens=100,
        temperature=None,
    )
    deltas = [delta async for delta in provider.generate(task)]
    text = "".join(delta.text for delta in deltas)
    assert "The meeting is on Friday at 10am." in text
    assert "pizza" not in text
    assert len(deltas) > 3
    assert all(len(delta.text.split()) <= 1 for delta in deltas)
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage is not None
    assert deltas[-1].usage.completion_tokens > 0


async def test_generate_quotes_context_given_before_the_question(
    provider: LocalProvider,
) -> None:
    task = GenerateTask(
        messages=[Message("user", "The sky over the sea was grey. What colour was it?")],
        max_tokens=100,
        temperature=None,
    )
    text = "".join([delta.text async for delta in provider.generate(task)])
    assert text == "The sky over the sea was grey."


async def test_generate_without_anything_to_quote_says_so(provider: LocalProvider) -> None:
    single = GenerateTask(
        messages=[Message("user", "Write a poem.")], max_tokens=100, temperature=None
    )
    text = "".join([delta.text async for delta in provider.generate(single)])
    assert text == NOTHING_TO_QUOTE
    unrelated = GenerateTask(
        messages=[Message("user", "The cat sleeps on the sofa."), Message("user", "What is 2+2?")],
        max_tokens=100,
        temperature=None,
    )
    text = "".join([delta.text async for delta in provider.generate(unrelated)])
    assert text == NOTHING_RELEVANT


async def test_generate_stops_at_max_tokens(provider: LocalProvider) -> None:
    task = GenerateTask(messages=[Message("user", "Write a poem.")], max_tokens=5, temperature=None)
    deltas = [delta async for delta in provider.generate(task)]
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage is not None
    assert deltas[-1].usage.completion_tokens <= 5
    assert "".join(d.text for d in deltas).strip() == " ".join(NOTHING_TO_QUOTE.split()[:5])


async def test_too_many_sentences_is_invalid(provider: LocalProvider) -> None:
    text = " ".join(f"Sentence number {i}." for i in range(MAX_SENTENCES + 1))
    with pytest.raises(InvalidArgument, match="at most 2000"):
        await provider.summarize(SummarizeTask(text=text, style="brief", max_words=0, max_tokens=9))


async def test_embedding_service_down_is_unavailable() -> None:
    local, channel = local_provider(f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(Unavailable, match="embedding service unavailable"):
            await local.summarize(
                SummarizeTask(text=" ".join(BEES), style="brief", max_words=0, max_tokens=9)
            )
    finally:
        await channel.close()


# Reference documentation as retrieval returns it: man page option entries (rendered by
# `man grep`), a Markdown settings page with a heading, a table and a list.
GREP_OPTIONS = Source(
    1,
    """-v, --invert-match
              Invert the sense of matching, to select non-matching lines.

       -w, --word-regexp
              Select only those  lines  containing  matches  that  form  whole
              words.   The  test is that the matching substring must either be
              at the  beginning  of  the  line,  or  preceded  by  a  non-word
              constituent  character.  This option has no effect if -x is also
              specified.

       -x, --line-regexp
              Select only those matches that exactly  match  the  whole  line.""",
)
GREP_OUTPUT = Source(
    2,
    """   General Output Control
       -c, --count
              Suppress normal output; instead print a count of matching  lines
              for  each  input  file.  With the -v, --invert-match option (see
              above), count non-matching lines.

       -L, --files-without-match
              Suppress  normal  output;  instead  print the name of each input
              file from which no output would normally have been printed.""",
)
SETTINGS_PAGE = Source(
    3,
    """## Retrieval settings

| Setting | Default | Meaning |
|---|---|---|
| `chunk_size` | 512 | Longest chunk of new collections, in tokens. |
| `chunk_overlap` | 64 | Tokens shared by neighbouring chunks. |

- `AIMESH_DATA_DIR`: where Milvus Lite keeps its files.
- `hybrid_fusion`: how hybrid search fuses the dense and BM25 rankings.""",
)
REFERENCE = [GREP_OPTIONS, GREP_OUTPUT, SETTINGS_PAGE]


async def first_quote(
    provider: LocalProvider, question: str, sources: list[Source]
) -> tuple[str, int]:
    """The first sentence the extractive answer to ``question`` quotes, and its source."""
    result = await provider.answer(AnswerTask(question=question, sources=sources, max_tokens=100))
    return cited_sentences(result.text)[0]


def cited_sentences(text: str) -> list[tuple[str, int]]:
    """``"a [1]. b [2]."`` -> [("a.", 1), ("b.", 2)]: each quote with its source number."""
    found = re.findall(r"(.+?) \[(\d+)\]([.!?]*)(?:\s+|$)", text)
    return [(f"{quote}{end}", int(number)) for quote, number, end in found]


async def test_answer_to_which_option_quotes_the_flag_with_its_description(
    provider: LocalProvider,
) -> None:
    result = await provider.answer(
        AnswerTask(
            question="Which grep option selects only matches that form whole words?",
            sources=REFERENCE,
            max_tokens=100,
        )
    )
    quotes = cited_sentences(result.text)
    assert quotes[0] == (
        "-w, --word-regexp: Select only those lines containing matches that form whole words.",
        1,
    )


async def test_answer_about_a_named_flag_quotes_its_own_definition_first(
    provider: LocalProvider,
) -> None:
    result = await provider.answer(
        AnswerTask(question="What does --count do?", sources=REFERENCE, max_tokens=100)
    )
    quotes = cited_sentences(result.text)
    assert quotes[0] == (
        "-c, --count: Suppress normal output; instead print a count of matching lines for "
        "each input file.",
        2,
    )
    # Never the subsection title the chunk starts with.
    assert "General Output Control" not in result.text


async def test_answer_from_markdown_has_no_pipes_headings_or_markers(
    provider: LocalProvider,
) -> None:
    result = await provider.answer(
        AnswerTask(question="What is the default chunk_size?", sources=REFERENCE, max_tokens=100)
    )
    quotes = cited_sentences(result.text)
    assert quotes[0] == (
        "chunk_size: Default: 512; Meaning: Longest chunk of new collections, in tokens.",
        3,
    )
    assert not re.search(r"[|#`]|(?:^|\s)[-*] ", result.text)


async def test_answer_type_prefers_the_sentence_with_a_date(provider: LocalProvider) -> None:
    lighthouse = Source(
        1,
        "The Harbor Lighthouse stands on the northern breakwater of the old port. "
        "Its lamp was built and first lit in 1874 by the city council. "
        "The lighthouse is built of local granite and painted white.",
    )
    result = await provider.answer(
        AnswerTask(
            question="When was the Harbor Lighthouse built?", sources=[lighthouse], max_tokens=100
        )
    )
    assert cited_sentences(result.text)[0] == (
        "Its lamp was built and first lit in 1874 by the city council.",
        1,
    )


async def test_summary_of_reference_docs_has_no_structure_marks(provider: LocalProvider) -> None:
    text = "\n\n".join(source.text for source in REFERENCE)
    result = await provider.summarize(
        SummarizeTask(text=text, style="detailed", max_words=0, max_tokens=400)
    )
    assert result.text
    assert not re.search(
        r"[|#`]|(?:^|\s)[-*] |General Output Control|Retrieval settings", result.text
    )
    # Whole sentences of the text, printed in document order.
    units = split_sentences(text)
    assert " ".join(unit for unit in units if unit in result.text) == result.text


async def test_answer_to_which_exception_quotes_the_sentence_naming_it(
    provider: LocalProvider,
) -> None:
    queue = Source(
        1,
        "Queue.task_done()\nIndicate that a formerly enqueued task is complete.\n\n"
        "Used by queue consumers. For each get() used to fetch a task, a subsequent call "
        "to task_done() tells the queue that the processing on the task is complete.\n\n"
        "Raises ValueError if called more times than there were items placed in\nthe queue.",
    )
    first = await first_quote(
        provider, "Which exception does Queue.task_done raise when called too many times?", [queue]
    )
    assert first == (
        "Queue.task_done(): Raises ValueError if called more times than there were items "
        "placed in the queue.",
        1,
    )


# A man page as the options QA set renders it: the command's name is in every sentence
# about it, so the question's similarity to them drowns what the option is asked to do.
PASSWD_PAGE = Source(
    1,
    "mosquitto_passwd - manage password files for mosquitto\n\n"
    "mosquitto_passwd [-H hash] [-c | -D] passwordfile username\n\n"
    "mosquitto_passwd is a tool for managing password files for the mosquitto MQTT "
    "broker.\n\n"
    "-b: Run in batch mode to allow passing passwords on the command line.\n\n"
    "-c: Create a new password file. If the file already exists, it will be "
    "overwritten.\n\n"
    "-D: Delete the specified user from the password file.\n\n"
    "-U: Update a plain text password file to use hashed passwords.\n",
)


async def test_which_option_quotes_the_definition_of_what_it_is_asked_to_do(
    provider: LocalProvider,
) -> None:
    first = await first_quote(
        provider, "mosquitto_passwd: what flag create a new password file", [PASSWD_PAGE]
    )
    assert first == ("-c: Create a new password file.", 1)


async def test_which_option_matches_a_paraphrase_of_the_options_description(
    provider: LocalProvider,
) -> None:
    first = await first_quote(
        provider,
        "in mosquitto_passwd, which command-line option removes the given user",
        [PASSWD_PAGE],
    )
    assert first == (
        "-D: Delete the specified user from the password file.",
        1,
    )


async def test_which_option_prefers_a_sentence_naming_an_option_to_one_naming_none(
    provider: LocalProvider,
) -> None:
    lsmem = Source(
        1,
        "lsmem - list the ranges of available memory with their online status\n\n"
        "The lsmem command lists a new memory range always when the current memory block "
        "distinguishes from the previous block by some output column. "
        "The opposite semantic is --all to list individual memory blocks.\n\n"
        "The listed memory blocks correspond to the memory block representation in sysfs.",
    )
    first = await first_quote(
        provider, "what is the lsmem option that shows each individual memory block", [lsmem]
    )
    assert first == (
        "The opposite semantic is --all to list individual memory blocks.",
        1,
    )


@pytest.mark.parametrize(
    ("question", "clause"),
    [
        (
            "Which grep option selects only matches that form whole words?",
            "selects only matches that form whole words",
        ),
        (
            "which apt-mark switch should I pass to read package stats from a file",
            "read package stats from a file",
        ),
        ("in git-rm, which command-line option don't remove any file", "don't remove any file"),
        ("bash: what flag do not use the readline library", "do not use the readline library"),
        ("what is the w option that don't print header", "don't print header"),
        ("which option of dpkg-split prints information", "prints information"),
        # A question naming its flag is answered by that flag's definition instead.
        ("What does the -r option do?", ""),
        ("What is the capital of France?", ""),
    ],
)
def test_asked_clause(question: str, clause: str) -> None:
    assert _asked_clause(question) == clause


async def test_summary_of_markdown_without_outer_pipes_has_no_marks(
    provider: LocalProvider,
) -> None:
    text = (
        "Chunking\n========\n\n"
        "Documents are split into chunks before they are embedded and indexed.\n\n"
        "Name | Default | Meaning\n---- | ------- | -------\n"
        "chunk_size | 512 | Longest chunk of new collections, in tokens.\n"
        "chunk_overlap | 64 | Tokens shared by neighbouring chunks.\n\n"
        "> Chunks that are too long are cut at the embedding model's input limit.\n\n"
        "1. Smaller chunks make retrieval more precise.\n"
        "2. Larger chunks give the answer more context.\n"
    )
    result = await provider.summarize(
        SummarizeTask(text=text, style="detailed", max_words=0, max_tokens=400)
    )
    assert result.text
    assert not re.search(r"[|#>`=]|(?:^|\s)(?:[-*]|\d\.) |Chunking", result.text)
    units = split_sentences(text)
    assert " ".join(unit for unit in units if unit in result.text) == result.text


async def test_an_option_question_embeds_its_clause_with_the_sentences_in_one_call(
    embedding_addr: str,
) -> None:
    question = "mosquitto_passwd: what flag create a new password file"
    channel, calls = recorded_channel(embedding_addr)
    try:
        client = EmbeddingClient(channel, timeout=30)
        local = LocalProvider(client, Settings(port=0, metrics_port=None).local_answer_threshold)
        [vector] = await client.embed([question])
        calls.calls.clear()
        result = await local.answer(
            AnswerTask(
                question=question, sources=[PASSWD_PAGE], max_tokens=100, question_vector=vector
            )
        )
        assert cited_sentences(result.text)[0] == ("-c: Create a new password file.", 1)
        assert calls.calls == [[*split_sentences(PASSWD_PAGE.text), "create a new password file"]]
    finally:
        await channel.close()
