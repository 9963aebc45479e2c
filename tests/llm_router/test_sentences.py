"""Structure-aware sentence splitting of the extractive provider, on real document text."""

from __future__ import annotations

from aimesh_llm_router.sentences import Sentence, clean_inline, split_sentences, split_units

# As `man grep` renders it (MANWIDTH=80), from the start of a retrieved chunk: the first
# term line lost its indentation to the chunker, a subsection title sits between entries.
GREP_CHUNK = """-G, --basic-regexp
              Interpret PATTERNS  as  basic  regular  expressions  (BREs,  see
              below).  This is the default.

       -P, --perl-regexp
              Interpret   PATTERNS   as  Perl-compatible  regular  expressions
              (PCREs).  This option is experimental when combined with the  -z
              (--null-data)  option,  and  grep  -P  may warn of unimplemented
              features.

   Matching Control
       -e PATTERNS, --regexp=PATTERNS
              Use PATTERNS as the patterns.  If this option is  used  multiple
              times or is combined with the -f (--file) option, search for all
              patterns given.
"""

GREP_HEAD = """grep(1)

GREP(1)                          User Commands                         GREP(1)

NAME
       grep, egrep, fgrep, rgrep - print lines that match patterns

DESCRIPTION
       grep  searches  for  PATTERNS  in  each  FILE.  PATTERNS is one or more
       patterns separated by newline characters.

ENVIRONMENT
       GREP_COLORS
              Controls how the --color option highlights output.
"""

# argparse --help output.
ARGPARSE_HELP = """usage: aimesh eval [-h] [--top-k TOP_K] SET

options:
  -h, --help     show this help message and exit
  --top-k TOP_K  chunks to retrieve per query; the service
                 caps it at 100
"""

# Markdown reference documentation: headings, a table, definition-style list items.
MARKDOWN = """# Retrieval service

## Settings

| Setting | Default | Meaning |
|---|---|---|
| `chunk_size` | 512 | Longest chunk of new collections, in tokens. |
| `hybrid_fusion` | adaptive | How hybrid search fuses the two rankings. |

Settings are read from the environment.

- `AIMESH_DATA_DIR`: where Milvus Lite keeps its files. It must be writable.
- **timeout** - seconds before a backend call fails
* A plain item that wraps
  onto a second line.
1. Install the package.
-

Limits
======

See the [limits module](https://example.org/limits) for the **hard** caps.
"""

# A NumPy-style docstring: underlined section title, "name : type" terms.
NUMPY_DOC = """Split an array into sub-arrays.

Parameters
----------
ary : ndarray
    Array to be divided into sub-arrays.
axis : int, optional
    The axis along which to split, default is 0.
"""


def texts(units: list[Sentence]) -> list[str]:
    return [unit.text for unit in units]


def test_man_page_options_keep_their_flags_and_drop_subsection_titles() -> None:
    assert split_sentences(GREP_CHUNK) == [
        "-G, --basic-regexp: Interpret PATTERNS as basic regular expressions (BREs, see below).",
        "-G, --basic-regexp: This is the default.",
        "-P, --perl-regexp: Interpret PATTERNS as Perl-compatible regular expressions (PCREs).",
        "-P, --perl-regexp: This option is experimental when combined with the -z "
        "(--null-data) option, and grep -P may warn of unimplemented features.",
        "-e PATTERNS, --regexp=PATTERNS: Use PATTERNS as the patterns.",
        "-e PATTERNS, --regexp=PATTERNS: If this option is used multiple times or is combined "
        "with the -f (--file) option, search for all patterns given.",
    ]
    units = split_units(GREP_CHUNK)
    assert [unit.lead for unit in units] == [True, False, True, False, True, False]
    assert units[0].term == "-G, --basic-regexp"


def test_man_page_section_names_and_page_header_are_not_sentences() -> None:
    assert split_sentences(GREP_HEAD) == [
        "grep, egrep, fgrep, rgrep - print lines that match patterns",
        "grep searches for PATTERNS in each FILE.",
        "PATTERNS is one or more patterns separated by newline characters.",
        "GREP_COLORS: Controls how the --color option highlights output.",
    ]


def test_argparse_help_keeps_each_option_with_its_wrapped_help() -> None:
    assert split_sentences(ARGPARSE_HELP)[-2:] == [
        "-h, --help: show this help message and exit",
        "--top-k TOP_K: chunks to retrieve per query; the service caps it at 100",
    ]


def test_markdown_headings_pipes_markers_and_markup_never_appear() -> None:
    sentences = split_sentences(MARKDOWN)
    assert sentences == [
        "chunk_size: Default: 512; Meaning: Longest chunk of new collections, in tokens.",
        "hybrid_fusion: Default: adaptive; Meaning: How hybrid search fuses the two rankings.",
        "Settings are read from the environment.",
        "AIMESH_DATA_DIR: where Milvus Lite keeps its files.",
        "AIMESH_DATA_DIR: It must be writable.",
        "timeout: seconds before a backend call fails",
        "A plain item that wraps onto a second line.",
        "Install the package.",
        "See the limits module for the hard caps.",
    ]
    for sentence in sentences:
        assert not set("|#`") & set(sentence)
        assert not sentence.startswith(("- ", "* ", "1. "))


def test_numpy_docstring_parameters_are_definitions() -> None:
    units = split_units(NUMPY_DOC)
    assert texts(units) == [
        "Split an array into sub-arrays.",
        "ary : ndarray: Array to be divided into sub-arrays.",
        "axis : int, optional: The axis along which to split, default is 0.",
    ]
    assert units[2].term == "axis : int, optional"


def test_a_term_without_its_description_is_not_quoted() -> None:
    # The chunk ends right after the term line: the term alone answers nothing.
    assert split_sentences("Some prose here.\n\n       -v, --invert-match\n") == [
        "Some prose here."
    ]


def test_plain_prose_and_short_messages_are_kept() -> None:
    assert split_sentences("hello there") == ["hello there"]
    assert split_sentences("Paris\nis the capital of France.") == [
        "Paris is the capital of France."
    ]


def test_clean_inline() -> None:
    assert clean_inline("Use `--top-k` (see [the docs](http://x/y)) **carefully**") == (
        "Use --top-k (see the docs) carefully"
    )


def test_words_hyphenated_across_lines_by_man_are_mended() -> None:
    text = (
        "       The default oper\u2010\n       ation is to exit immediately on error "
        "writing to a pipe, and to diagnose errors writing to non-\n       pipe outputs.\n"
    )
    assert split_sentences(text) == [
        "The default operation is to exit immediately on error writing to a pipe, and to "
        "diagnose errors writing to non- pipe outputs."
    ]


# An API reference as the QA sets carry it: each signature heads its docstring's
# paragraphs, up to the next signature.
API_REFERENCE = """Queue(maxsize=0)
A queue, useful for coordinating producer and consumer coroutines.

If maxsize is less than or equal to zero, the queue size is infinite.

Queue.task_done()
Indicate that a formerly enqueued task is complete.

Raises ValueError if called more times than there were items placed in
the queue.
"""


def test_api_docstring_paragraphs_keep_their_signature() -> None:
    units = split_units(API_REFERENCE)
    assert texts(units) == [
        "Queue(maxsize=0): A queue, useful for coordinating producer and consumer coroutines.",
        "Queue(maxsize=0): If maxsize is less than or equal to zero, the queue size is infinite.",
        "Queue.task_done(): Indicate that a formerly enqueued task is complete.",
        "Queue.task_done(): Raises ValueError if called more times than there were items "
        "placed in the queue.",
    ]
    # Only the first sentence of each entry is its lead.
    assert [unit.lead for unit in units] == [True, False, True, False]


def test_numpy_raises_section_and_doctests() -> None:
    text = (
        "Compile one or more source files.\n\nRaises\n------\nCompileError\n"
        "    If compilation fails.\n\nExamples\n--------\n>>> compile(['a.c'])\n['a.o']\n"
    )
    assert split_sentences(text) == [
        "Compile one or more source files.",
        "CompileError: If compilation fails.",
    ]


def test_an_option_on_one_line_keeps_a_term_with_dots() -> None:
    text = (
        "-I, --info part...: Prints information, in a human-readable format, about the "
        "part file(s) specified.\n\n"
        "-P profile[,...]: Check build dependencies for the given build profiles.\n\n"
        "--trivial-merge mode. With the exception of the section at the end: all of it.\n"
    )
    units = split_units(text)
    assert [unit.term for unit in units[:2]] == ["-I, --info part...", "-P profile[,...]"]
    assert units[1].text == (
        "-P profile[,...]: Check build dependencies for the given build profiles."
    )
    # A flag starting a sentence is no term when a sentence ends before the colon.
    assert units[2] == Sentence("--trivial-merge mode.", "", True)


def test_pipe_tables_without_outer_pipes_and_block_quotes_leave_no_marks() -> None:
    text = (
        "Name | Default | Meaning\n"
        "---- | ------- | -------\n"
        "chunk_size | 512 | Longest chunk of new collections, in tokens.\n"
        "overlap | 64 | Tokens shared by neighbouring chunks.\n\n"
        "> A quoted note: the sizes are counted in model tokens.\n\n"
        "Pipe the output through sort | uniq to count lines.\n"
    )
    assert split_sentences(text) == [
        "chunk_size: Default: 512; Meaning: Longest chunk of new collections, in tokens.",
        "overlap: Default: 64; Meaning: Tokens shared by neighbouring chunks.",
        "A quoted note: the sizes are counted in model tokens.",
        # A pipe in prose, outside a table, is text.
        "Pipe the output through sort | uniq to count lines.",
    ]


def test_an_option_with_help_on_its_line_ends_at_the_next_flag() -> None:
    # A chunk starting at "-H" lost the line's indentation: the help column (7) is no
    # deeper than the next entries' terms, which must not be glued to -H's help.
    text = (
        "-H     equivalent to --dereference-args (-D)\n\n"
        "       -h, --human-readable\n"
        "              print sizes in human readable format (e.g., 1K 234M 2G)\n\n"
        "       --inodes\n"
        "              list inode usage information instead of block usage\n"
    )
    assert split_sentences(text) == [
        "-H: equivalent to --dereference-args (-D)",
        "-h, --human-readable: print sizes in human readable format (e.g., 1K 234M 2G)",
        "--inodes: list inode usage information instead of block usage",
    ]
