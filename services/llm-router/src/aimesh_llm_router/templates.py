"""Versioned prompt templates, loaded from YAML files shipped in the package.

Each task has a directory ``prompts/<task>/`` with one file per version (``v1.yaml``,
``v2.yaml``, ...). A file lists ``messages``: a ``system`` message first (the router's own
system prompt, which clients can never replace), then ``human``/``ai`` messages with a
``template``, or a ``placeholder`` naming a ``variable`` that receives a list of messages.
Templates use ``{variable}`` (Python format syntax; write ``{{`` for a literal brace).

Templates are validated when the service starts: the set of variables a template uses
must equal the set its task supplies, so a typo fails the start instead of a request.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml
from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

Task = Literal["summarize", "qa", "chat"]

# The variables each task supplies: a template must use exactly these.
TASK_VARIABLES: Mapping[Task, frozenset[str]] = {
    "summarize": frozenset({"text", "style_instructions", "max_words"}),
    "qa": frozenset({"question", "sources"}),
    "chat": frozenset({"conversation"}),
}

_TEXT_ROLES = {"system", "human", "ai"}


class PromptTemplateError(ValueError):
    """A prompt template file is missing or invalid; the message names the file."""


@dataclass(frozen=True)
class PromptTemplate:
    """One loaded, validated template."""

    task: Task
    version: int
    source: str
    template: ChatPromptTemplate

    def render(self, **variables: Any) -> list[BaseMessage]:
        """The messages to send, with the variables filled in."""
        return self.template.format_messages(**variables)

    @property
    def label(self) -> str:
        """``"<task>/v<version>"``, as reported to callers (e.g. ``"qa/v1"``)."""
        return f"{self.task}/v{self.version}"


@dataclass(frozen=True)
class PromptLibrary:
    """The templates the router uses, one per task."""

    summarize: PromptTemplate
    qa: PromptTemplate
    chat: PromptTemplate

    def template(self, task: Task) -> PromptTemplate:
        """The template of ``task``."""
        templates: dict[Task, PromptTemplate] = {
            "summarize": self.summarize,
            "qa": self.qa,
            "chat": self.chat,
        }
        return templates[task]


def default_prompt_root() -> Traversable:
    """The ``prompts`` directory inside the installed package."""
    return files("aimesh_llm_router") / "prompts"


def _format_fields(text: str) -> set[str]:
    """Variables used by a format string; raises ValueError on bad brace syntax."""
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def _build_messages(source: str, raw: object) -> list[Any]:
    if not isinstance(raw, list) or not raw:
        raise PromptTemplateError(f"{source}: 'messages' must be a non-empty list")
    messages: list[Any] = []
    for index, item in enumerate(raw):
        where = f"{source}: messages[{index}]"
        if not isinstance(item, dict):
            raise PromptTemplateError(f"{where} must be a mapping with 'role'")
        role = item.get("role")
        if index == 0 and role != "system":
            raise PromptTemplateError(f"{where} must be the system message (role: system)")
        if index > 0 and role == "system":
            raise PromptTemplateError(f"{where}: only the first message may be a system message")
        if role == "placeholder":
            variable = item.get("variable")
            if not isinstance(variable, str) or not variable.isidentifier():
                raise PromptTemplateError(f"{where}: a placeholder needs a 'variable' name")
            messages.append(MessagesPlaceholder(variable))
        elif role in _TEXT_ROLES:
            text = item.get("template")
            if not isinstance(text, str) or not text.strip():
                raise PromptTemplateError(f"{where}: 'template' must be a non-empty string")
            try:
                fields = _format_fields(text)
            except ValueError as error:
                raise PromptTemplateError(f"{where}: bad template syntax: {error}") from None
            bad = sorted(field for field in fields if not field.isidentifier())
            if bad:
                raise PromptTemplateError(
                    f"{where}: variables must be plain names, got {', '.join(bad)} "
                    "(write {{ and }} for literal braces)"
                )
            messages.append((role, text))
        else:
            raise PromptTemplateError(
                f"{where}: unknown role {role!r}; use system, human, ai or placeholder"
            )
    return messages


def load_template(
    task: Task, version: int = 1, root: Traversable | Path | None = None
) -> PromptTemplate:
    """Load ``<root>/<task>/v<version>.yaml`` and check its variables against the task."""
    base = root if root is not None else default_prompt_root()
    entry = base / task / f"v{version}.yaml"
    source = f"prompts/{task}/v{version}.yaml"
    try:
        raw = yaml.safe_load(entry.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptTemplateError(f"{source}: no such template") from None
    except yaml.YAMLError as error:
        raise PromptTemplateError(f"{source}: invalid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise PromptTemplateError(f"{source}: expected a mapping at the top level")
    if raw.get("task") != task or raw.get("version") != version:
        raise PromptTemplateError(
            f"{source}: declares task={raw.get('task')!r} version={raw.get('version')!r}, "
            f"expected task={task!r} version={version}"
        )
    template = ChatPromptTemplate.from_messages(_build_messages(source, raw.get("messages")))
    used = frozenset(template.input_variables) | frozenset(template.optional_variables)
    expected = TASK_VARIABLES[task]
    if used != expected:
        problems = []
        if unknown := sorted(used - expected):
            problems.append(f"unknown variables {', '.join(unknown)}")
        if missing := sorted(expected - used):
            problems.append(f"missing variables {', '.join(missing)}")
        raise PromptTemplateError(
            f"{source}: {'; '.join(problems)} "
            f"(the {task} task supplies exactly: {', '.join(sorted(expected))})"
        )
    return PromptTemplate(task=task, version=version, source=source, template=template)


def load_prompt_library(
    root: Traversable | Path | None = None, versions: Mapping[Task, int] | None = None
) -> PromptLibrary:
    """Load and validate every task's template (version 1 unless ``versions`` says)."""
    chosen = versions or {}
    return PromptLibrary(
        summarize=load_template("summarize", chosen.get("summarize", 1), root),
        qa=load_template("qa", chosen.get("qa", 1), root),
        chat=load_template("chat", chosen.get("chat", 1), root),
    )
