"""Function tools passed through Generate: validated from the request, handed to providers
that support them, and the model's calls handed back.

The router neither runs tools nor renders them into prompts: a tool-capable provider sends
the definitions to its upstream model as they came (OpenAI function tools), and the model's
calls go back to the client, which runs them and answers with ``tool`` messages.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aimesh.llm.v1 import llm_pb2
from aimesh_common import jsonlimits
from aimesh_common.errors import InvalidArgument

# OpenAI's rule for function names.
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOOL_CHOICES = frozenset({"", "auto", "none", "required"})
MAX_TOOLS = 128


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call."""

    name: str
    description: str
    # JSON Schema of the arguments (an object schema).
    parameters: dict[str, Any]

    def openai(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this function."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolCall:
    """A call of a function by the model; ``arguments`` is JSON text."""

    id: str
    name: str
    arguments: str

    def langchain(self) -> dict[str, Any]:
        """The LangChain ``tool_calls`` entry (arguments parsed)."""
        args = json.loads(self.arguments) if self.arguments.strip() else {}
        return {"type": "tool_call", "id": self.id, "name": self.name, "args": args}

    def proto(self) -> llm_pb2.ToolCall:
        return llm_pb2.ToolCall(id=self.id, name=self.name, arguments_json=self.arguments)


@dataclass(frozen=True)
class ToolOptions:
    """The tools of one Generate call and how the model must use them."""

    tools: Sequence[ToolSpec] = ()
    # "" (provider default), "auto", "none" or "required".
    choice: str = ""
    # A function the model must call ("" = none forced).
    forced: str = ""
    # Whether the model may call several tools in one turn (None = the provider default).
    parallel: bool | None = None


NO_TOOLS = ToolOptions()


def _json_object(text: str, field: str) -> dict[str, Any]:
    """The JSON object in ``text``, within the limits the gateway also applies to request
    bodies (nesting depth, integer size, no NaN): INVALID_ARGUMENT otherwise."""
    try:
        value = jsonlimits.loads(text, field, max_depth=jsonlimits.MAX_BODY_DEPTH)
    except jsonlimits.JsonLimitError as error:
        raise InvalidArgument(str(error)) from None
    except ValueError:
        raise InvalidArgument(f"{field} must be JSON text, got {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{field} must be a JSON object")
    return value


def tool_options(request: llm_pb2.GenerateRequest) -> ToolOptions:
    """The validated tools of ``request``; InvalidArgument names the offending field."""
    if len(request.tools) > MAX_TOOLS:
        raise InvalidArgument(f"tools may hold at most {MAX_TOOLS} functions")
    specs: list[ToolSpec] = []
    names: set[str] = set()
    for index, tool in enumerate(request.tools):
        if not _TOOL_NAME.match(tool.name):
            raise InvalidArgument(
                f"tools[{index}].name must be 1-64 characters of [A-Za-z0-9_-], got {tool.name!r}"
            )
        if tool.name in names:
            raise InvalidArgument(f"tools[{index}].name {tool.name!r} is given twice")
        names.add(tool.name)
        parameters: dict[str, Any] = {"type": "object", "properties": {}}
        if tool.parameters_json.strip():
            parameters = _json_object(tool.parameters_json, f"tools[{index}].parameters_json")
        specs.append(ToolSpec(tool.name, tool.description, parameters))
    if request.tool_choice not in TOOL_CHOICES:
        raise InvalidArgument(
            f"tool_choice must be auto, none or required, got {request.tool_choice!r}"
        )
    if (request.tool_choice or request.tool_choice_name) and not specs:
        raise InvalidArgument("tool_choice needs tools")
    if request.tool_choice_name and request.tool_choice_name not in names:
        raise InvalidArgument(
            f"tool_choice names {request.tool_choice_name!r}, which is not a tool"
        )
    parallel: bool | None = None
    if request.HasField("parallel_tool_calls"):
        if not specs:
            raise InvalidArgument("parallel_tool_calls needs tools")
        parallel = request.parallel_tool_calls
    return ToolOptions(tuple(specs), request.tool_choice, request.tool_choice_name, parallel)


def message_tool_calls(message: llm_pb2.ChatMessage, index: int) -> tuple[ToolCall, ...]:
    """The validated tool calls of an assistant message."""
    calls: list[ToolCall] = []
    for position, call in enumerate(message.tool_calls):
        field = f"messages[{index}].tool_calls[{position}]"
        if not call.id:
            raise InvalidArgument(f"{field}.id must not be empty")
        if not _TOOL_NAME.match(call.name):
            raise InvalidArgument(f"{field}.name must be 1-64 characters of [A-Za-z0-9_-]")
        if call.arguments_json.strip():
            _json_object(call.arguments_json, f"{field}.arguments_json")
        calls.append(ToolCall(call.id, call.name, call.arguments_json))
    return tuple(calls)


def calls_from_chunks(chunks: Sequence[Mapping[str, Any]]) -> tuple[ToolCall, ...]:
    """Complete calls from merged LangChain ``tool_call_chunks`` (one per call index).

    A call without an id (some OpenAI-compatible servers send none) gets a fresh one, so the
    client can still answer it.
    """
    calls: list[ToolCall] = []
    for chunk in chunks:
        name = chunk.get("name") or ""
        if not name:
            continue
        call_id = chunk.get("id") or f"call_{uuid.uuid4().hex[:24]}"
        calls.append(ToolCall(str(call_id), str(name), str(chunk.get("args") or "")))
    return tuple(calls)
