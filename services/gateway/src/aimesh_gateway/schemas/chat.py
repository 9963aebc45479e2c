"""The OpenAI chat completions shape (the subset aimesh serves).

Requests ignore unknown fields: OpenAI clients send many (``seed``, ``logprobs`` ...) that have
no meaning here, and rejecting them would break those clients. Function ``tools`` (with
``tool_choice``, assistant ``tool_calls`` and ``tool`` messages) are passed through to models
whose provider supports them; other models answer 400 rather than dropping them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aimesh_gateway.schemas.common import TaskModel


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Lenient):
    type: str = Field(examples=["text"])
    text: str | None = None


FUNCTION_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# The router's limits on stop sequences (aimesh_llm_router.stops), checked here for a 422.
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 200


class FunctionCall(_Lenient):
    name: str = Field(pattern=FUNCTION_NAME_PATTERN, examples=["get_weather"])
    arguments: str = Field(
        "", description="The arguments as JSON text.", examples=['{"city": "Paris"}']
    )

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, value: str) -> str:
        if value.strip():
            try:
                parsed = json.loads(value)
            except ValueError:
                raise ValueError("arguments must be JSON text") from None
            if not isinstance(parsed, dict):
                raise ValueError("arguments must be a JSON object")
        return value


class ToolCall(BaseModel):
    id: str = Field(min_length=1, max_length=256, examples=["call_abc123"])
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDefinition(_Lenient):
    name: str = Field(pattern=FUNCTION_NAME_PATTERN, examples=["get_weather"])
    description: str | None = Field(None, max_length=4096)
    parameters: dict[str, Any] | None = Field(
        None, description="JSON Schema of the arguments; omitted means no arguments."
    )


class ToolIn(_Lenient):
    type: Literal["function"] = Field(description="Only function tools are supported.")
    function: FunctionDefinition


class NamedFunction(_Lenient):
    name: str = Field(pattern=FUNCTION_NAME_PATTERN)


class NamedToolChoice(_Lenient):
    type: Literal["function"]
    function: NamedFunction


class ChatMessageIn(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
        description='"developer" is treated as "system". A "tool" message answers an '
        "assistant's tool call (tool_call_id)."
    )
    content: str | list[ContentPart] | None = Field(
        None, description="Text, or a list of text content parts."
    )
    tool_calls: list[ToolCall] | None = Field(
        None, max_length=128, description="Tools an assistant message called."
    )
    tool_call_id: str | None = Field(
        None, max_length=256, description='For a "tool" message: the call it answers.'
    )

    @field_validator("content")
    @classmethod
    def _text_only(cls, value: str | list[ContentPart] | None) -> str | list[ContentPart] | None:
        if isinstance(value, list):
            for part in value:
                if part.type != "text" or part.text is None:
                    raise ValueError(f"only text content parts are supported (got {part.type!r})")
        return value

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessageIn:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages have tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        return self

    def uses_tools(self) -> bool:
        return self.role == "tool" or bool(self.tool_calls)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)

    def proto_role(self) -> str:
        return "system" if self.role == "developer" else self.role


class StreamOptions(_Lenient):
    include_usage: bool = Field(False, description="Send a last chunk carrying the usage.")


class ChatCompletionRequest(_Lenient):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model": "default", "messages": [{"role": "user", "content": "Say hello."}]}
            ]
        }
    )

    model: TaskModel = None
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    max_completion_tokens: int | None = Field(
        None, ge=1, description="Newer name of max_tokens; wins when both are set."
    )
    temperature: float | None = Field(None, ge=0, le=2)
    stream: bool = Field(False, description="Stream the reply as server-sent events.")
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=1, description="Only one choice is supported.")
    tools: list[ToolIn] | None = Field(
        None,
        max_length=128,
        description="Functions the model may call; only models whose provider supports "
        "tools accept them (400 otherwise).",
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = Field(
        None,
        description="Whether the model may call several tools in one turn (passed to the "
        "provider; unset: its default). Needs tools.",
    )
    stop: str | list[str] | None = Field(
        None,
        description="Up to 4 sequences where generation stops: the reply ends right before "
        'the first of them, which is not returned (finish_reason "stop").',
        examples=[["\n\n"]],
    )
    user: str | None = Field(
        None,
        max_length=256,
        description="Accepted for OpenAI compatibility and not used: aimesh knows the caller "
        "from the credential.",
    )

    @field_validator("stop")
    @classmethod
    def _stop_sequences(cls, value: str | list[str] | None) -> str | list[str] | None:
        sequences = [value] if isinstance(value, str) else value or []
        if len(sequences) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        for sequence in sequences:
            if not sequence or len(sequence) > MAX_STOP_CHARS:
                raise ValueError(f"each stop sequence must have 1 to {MAX_STOP_CHARS} characters")
        return value

    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @model_validator(mode="after")
    def _tool_messages_answer_calls(self) -> ChatCompletionRequest:
        called: set[str] = set()
        for index, message in enumerate(self.messages):
            called.update(call.id for call in message.tool_calls or ())
            if message.role == "tool" and message.tool_call_id not in called:
                raise ValueError(
                    f"messages[{index}] answers tool call {message.tool_call_id!r}, which no "
                    "earlier assistant message made"
                )
        return self

    @model_validator(mode="after")
    def _tool_choice_needs_tools(self) -> ChatCompletionRequest:
        if self.tool_choice is not None and not self.tools:
            raise ValueError("tool_choice needs tools")
        if self.parallel_tool_calls is not None and not self.tools:
            raise ValueError("parallel_tool_calls needs tools")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {tool.function.name for tool in self.tools or ()}
            if self.tool_choice.function.name not in names:
                raise ValueError(
                    f"tool_choice names {self.tool_choice.function.name!r}, not a tool"
                )
        return self

    def uses_tools(self) -> bool:
        """Whether the call needs a tool-capable model (tools or tool messages)."""
        return bool(self.tools) or any(message.uses_tools() for message in self.messages)

    def token_limit(self) -> int:
        """The limit for the router: 0 means the alias's configured maximum."""
        return self.max_completion_tokens or self.max_tokens or 0


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="null when the model only called tools.")
    tool_calls: list[ToolCall] | None = Field(
        None,
        description="Tools the model called (finish_reason tool_calls); omitted if none.",
        exclude_if=lambda calls: calls is None,
    )


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: str = Field(examples=["stop"], description='"stop", "length" or "tool_calls".')
    logprobs: None = None


class ChatUsage(BaseModel):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class ChatCompletion(BaseModel):
    id: str = Field(examples=["chatcmpl-3f2c9a0e1b7d4e6f8a9b0c1d2e3f4a5b"])
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(description="Unix time of the request.")
    model: str = Field(description="Alias that served the request.", examples=["default"])
    choices: list[ChatChoice]
    usage: ChatUsage
    system_fingerprint: str | None = None
