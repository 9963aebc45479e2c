"""Prompt templates: the shipped ones load and render; broken ones fail at load time."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from aimesh_llm_router.citations import Source, render_sources
from aimesh_llm_router.templates import (
    TASK_VARIABLES,
    PromptTemplateError,
    default_prompt_root,
    load_prompt_library,
    load_template,
)


def write(root: Path, task: str, body: str, version: int = 1) -> Path:
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"v{version}.yaml"
    path.write_text(body, encoding="utf-8")
    return root


QA_OK = """
task: qa
version: 1
messages:
  - role: system
    template: Answer from the sources.
  - role: human
    template: "{sources}\\n\\nQ: {question}"
"""


def test_shipped_templates_use_exactly_the_task_variables() -> None:
    library = load_prompt_library()
    for template in (library.summarize, library.qa, library.chat):
        assert set(template.template.input_variables) == TASK_VARIABLES[template.task]
        assert template.version == 1
        assert template.template.messages[0].__class__.__name__ == "SystemMessagePromptTemplate"


def test_qa_template_renders_system_prompt_and_numbered_sources() -> None:
    qa = load_prompt_library().qa
    sources = render_sources([Source(1, "Paris is in France."), Source(2, "Rome is in Italy.")])
    messages = qa.render(question="Where is Rome?", sources=sources)
    assert isinstance(messages[0], SystemMessage)
    assert "only the numbered sources" in str(messages[0].content)
    assert "I don't know" in str(messages[0].content)
    human = str(messages[-1].content)
    assert "[1] Paris is in France.\n\n[2] Rome is in Italy." in human
    assert "Where is Rome?" in human


def test_braces_in_variable_values_are_kept_literally() -> None:
    summarize = load_prompt_library().summarize
    text = "config = {'a': {b}}"
    rendered = summarize.render(text=text, style_instructions="Be brief.", max_words=10)
    assert text in str(rendered[-1].content)
    assert "at most 10 words" in str(rendered[-1].content)


def test_chat_template_puts_router_system_prompt_before_the_conversation() -> None:
    chat = load_prompt_library().chat
    messages = chat.render(conversation=[SystemMessage("Speak like a pirate."), HumanMessage("hi")])
    assert isinstance(messages[0], SystemMessage)
    assert "aimesh" in str(messages[0].content)
    assert [str(m.content) for m in messages[1:]] == ["Speak like a pirate.", "hi"]


def test_a_valid_custom_template_loads(tmp_path: Path) -> None:
    template = load_template("qa", root=write(tmp_path, "qa", QA_OK))
    assert set(template.template.input_variables) == {"question", "sources"}


def test_unknown_variable_fails_with_its_name(tmp_path: Path) -> None:
    body = QA_OK.replace("Q: {question}", "Q: {question} for {audience}")
    with pytest.raises(PromptTemplateError, match=r"unknown variables audience") as error:
        load_template("qa", root=write(tmp_path, "qa", body))
    assert "prompts/qa/v1.yaml" in str(error.value)
    assert "supplies exactly: question, sources" in str(error.value)


def test_missing_variable_fails(tmp_path: Path) -> None:
    body = QA_OK.replace("{sources}\\n\\n", "")
    with pytest.raises(PromptTemplateError, match=r"missing variables sources"):
        load_template("qa", root=write(tmp_path, "qa", body))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (QA_OK.replace("Q: {question}", "Q: {question"), "bad template syntax"),
        (QA_OK.replace("{sources}", "{sources.upper}"), "must be plain names"),
        (QA_OK.replace("role: system", "role: human"), "must be the system message"),
        (QA_OK.replace("role: human", "role: system"), "only the first message"),
        (QA_OK.replace("role: human", "role: wizard"), "unknown role 'wizard'"),
        (QA_OK.replace("version: 1", "version: 2"), "expected task='qa' version=1"),
        (QA_OK.replace("task: qa", "task: chat"), "expected task='qa'"),
        ("task: qa\nversion: 1\nmessages: []\n", "non-empty list"),
        ("task: qa\nversion: 1\nmessages: [\n", "invalid YAML"),
        ("- just a list\n", "mapping at the top level"),
    ],
)
def test_malformed_templates_fail_clearly(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(PromptTemplateError, match=message):
        load_template("qa", root=write(tmp_path, "qa", body))


def test_placeholder_needs_a_variable(tmp_path: Path) -> None:
    body = (
        "task: chat\nversion: 1\nmessages:\n"
        "  - {role: system, template: hi}\n  - {role: placeholder}\n"
    )
    with pytest.raises(PromptTemplateError, match="needs a 'variable'"):
        load_template("chat", root=write(tmp_path, "chat", body))


def test_missing_version_file_fails(tmp_path: Path) -> None:
    with pytest.raises(PromptTemplateError, match=r"prompts/qa/v3.yaml: no such template"):
        load_template("qa", version=3, root=write(tmp_path, "qa", QA_OK))


def test_library_fails_fast_when_one_task_template_is_broken(tmp_path: Path) -> None:
    for task in ("summarize", "chat"):
        shipped = (default_prompt_root() / task / "v1.yaml").read_text(encoding="utf-8")
        write(tmp_path, task, shipped)
    write(tmp_path, "qa", QA_OK.replace("{question}", "{query}"))
    with pytest.raises(PromptTemplateError, match=r"prompts/qa/v1\.yaml: unknown variables query"):
        load_prompt_library(root=tmp_path)
