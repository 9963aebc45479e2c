"""Generate: chat completion streamed from the first alias that answers, with tools,
and stop sequences the router enforces itself (whatever the provider does with them)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast, get_args

from aimesh.llm.v1 import llm_pb2
from aimesh_common.errors import InvalidArgument
from aimesh_llm_router.metrics import observe
from aimesh_llm_router.models import ResolvedModel
from aimesh_llm_router.providers.base import Delta, GenerateTask, Message, Role
from aimesh_llm_router.stops import StopMatcher, validate_stops
from aimesh_llm_router.tasks.common import (
    Spent,
    TaskDeps,
    account,
    charge_spent,
    log_usage,
    max_tokens,
    prompt_version,
    temperature,
    usage_message,
)
from aimesh_llm_router.tools import ToolOptions, message_tool_calls, tool_options

ROLES = frozenset(get_args(Role))


@dataclass(frozen=True)
class Chat:
    """A checked Generate request, with the alias chain that can serve it."""

    messages: list[Message]
    tools: ToolOptions
    stops: tuple[str, ...]
    chain: list[ResolvedModel]
    temperature: float | None
    max_tokens: int
    tenant_id: str
    response_format: dict[str, Any] | None = None


def parse(deps: TaskDeps, request: llm_pb2.GenerateRequest) -> Chat:
    """The request, checked: messages, temperature, tools, stop sequences, and an alias
    chain cut to the tool-capable aliases when the call uses tools."""
    messages = parse_messages(request)
    chosen = temperature(request)
    tools = tool_options(request)
    stops = validate_stops(request.stop)
    chain = deps.models.chain(request.model, "chat", request.tenant_id)
    if _uses_tools(messages, tools):
        chain = _tool_chain(chain)
    response_format = parse_response_format(request.response_format_json)
    if response_format is not None:
        chain = _response_format_chain(chain)
    return Chat(
        messages=messages,
        tools=tools,
        stops=stops,
        chain=chain,
        temperature=chosen,
        max_tokens=request.max_tokens,
        tenant_id=request.tenant_id,
        response_format=response_format,
    )


async def generate(
    deps: TaskDeps, chat: Chat, time_remaining: float | None
) -> AsyncIterator[llm_pb2.GenerateResponse]:
    """The reply as it streams; text that may begin a stop sequence is held back and
    everything after one is cut (the finish reason is then "stop")."""

    def start(model: ResolvedModel) -> AsyncIterator[Delta]:
        return model.provider.generate(
            GenerateTask(
                messages=chat.messages,
                max_tokens=max_tokens(chat.max_tokens, model),
                temperature=chat.temperature,
                tools=chat.tools,
                stop=chat.stops,
                response_format=chat.response_format,
            )
        )

    first = chat.chain[0]
    answered = first
    deadline = deps.resilience.deadline(first, time_remaining)
    matcher = StopMatcher(chat.stops)
    spent = Spent.of_prompt(*(message.content for message in chat.messages))
    with observe(first.alias, first.provider.name, "generate", chat.tenant_id) as record:
        # The prompt alone, once the model is called: what a caller leaving before the
        # first token is charged.
        yield llm_pb2.GenerateResponse(spent=usage_message(spent.usage, first))
        try:
            async for model, delta in deps.resilience.stream(chat.chain, start, deadline):
                answered = model
                # Counted as generated (the provider spent them), held back or not.
                spent.see(delta)
                text = matcher.feed(delta.text) if delta.text else ""
                if delta.finish_reason is not None:
                    text += matcher.flush()
                elif not text and delta.usage is None and not delta.tool_calls:
                    continue  # held back (a possible stop sequence) or cut after one
                response = llm_pb2.GenerateResponse(
                    delta=text,
                    model=model.alias,
                    provider=model.provider.name,
                    prompt_version=prompt_version(model, "chat"),
                )
                if delta.finish_reason is not None:
                    response.finish_reason = "stop" if matcher.stopped else delta.finish_reason
                if delta.usage is not None:
                    account(record, model, delta.usage)
                    response.usage.CopyFrom(usage_message(delta.usage, model))
                else:
                    response.spent.CopyFrom(usage_message(spent.usage, model))
                response.tool_calls.extend(call.proto() for call in delta.tool_calls)
                yield response
        except BaseException:
            if record.usage is None:  # cancelled or failed before the end: count the spent
                charge_spent(record, answered, spent)
            raise
    if record.usage is not None:
        log_usage("generate", chat.tenant_id, answered, record.usage)


def parse_messages(request: llm_pb2.GenerateRequest) -> list[Message]:
    """The conversation, checked: known roles, tool calls only from the assistant, each
    tool message answering an earlier call, and a user or tool message last."""
    if not request.messages:
        raise InvalidArgument("messages must contain at least one message")
    messages: list[Message] = []
    called: set[str] = set()
    for index, message in enumerate(request.messages):
        if message.role not in ROLES:
            raise InvalidArgument(
                f"messages[{index}].role must be system, user, assistant or tool, "
                f"got {message.role!r}"
            )
        if message.tool_calls and message.role != "assistant":
            raise InvalidArgument(f"messages[{index}]: only assistant messages call tools")
        calls = message_tool_calls(message, index)
        if message.role == "tool" and not message.tool_call_id:
            raise InvalidArgument(f"messages[{index}].tool_call_id must name the call answered")
        called.update(call.id for call in calls)
        if message.role == "tool" and message.tool_call_id not in called:
            raise InvalidArgument(
                f"messages[{index}] answers tool call {message.tool_call_id!r}, which no "
                "earlier assistant message made"
            )
        if not message.content.strip() and not calls:
            raise InvalidArgument(f"messages[{index}].content must not be empty")
        messages.append(
            Message(
                role=cast(Role, message.role),
                content=message.content,
                tool_calls=calls,
                tool_call_id=message.tool_call_id if message.role == "tool" else "",
            )
        )
    if messages[-1].role not in ("user", "tool"):
        raise InvalidArgument(
            f"the last message must be from the user or a tool, got {messages[-1].role!r}"
        )
    return messages


def _uses_tools(messages: list[Message], tools: ToolOptions) -> bool:
    """Whether the call needs a provider that understands tools (tools or tool messages)."""
    return bool(tools.tools) or any(m.role == "tool" or m.tool_calls for m in messages)


def _tool_chain(chain: list[ResolvedModel]) -> list[ResolvedModel]:
    """``chain`` without the aliases whose provider cannot take tools; the requested alias
    itself must take them."""
    if not chain[0].provider.supports_tools:
        raise InvalidArgument(
            f"model {chain[0].alias!r} does not support tools (its provider is "
            f"{chain[0].provider.name!r}); use a model served by a tool-capable provider"
        )
    return [model for model in chain if model.provider.supports_tools]


def parse_response_format(text: str) -> dict[str, Any] | None:
    """The checked ``response_format`` (OpenAI's chat shape), None for free text."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidArgument("response_format must be a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidArgument("response_format must be a JSON object")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise InvalidArgument(
            f"response_format.type must be text, json_object or json_schema, got {kind!r}"
        )
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise InvalidArgument("response_format.json_schema needs a name")
    if not isinstance(spec.get("schema", {}), dict):
        raise InvalidArgument("response_format.json_schema.schema must be a JSON object")
    return {"type": "json_schema", "json_schema": spec}


def _response_format_chain(chain: list[ResolvedModel]) -> list[ResolvedModel]:
    """``chain`` without the aliases whose provider cannot follow a response format; the
    requested alias itself must."""
    if not chain[0].provider.supports_response_format:
        raise InvalidArgument(
            f"model {chain[0].alias!r} does not support a JSON response format "
            f"(text.format / response_format; its provider is {chain[0].provider.name!r}); "
            "use a model served by the openai provider"
        )
    return [model for model in chain if model.provider.supports_response_format]
