"""The OpenAI chat completions shape (the subset aimesh serves).

Parameters of OpenAI's API that have no meaning here (``seed``, ``logprobs``, ``top_p`` ...:
:data:`IGNORED_CHAT_PARAMETERS`) are accepted and ignored, as OpenAI clients send them; OpenAI
parameters whose effect aimesh cannot give (``response_format``, ``audio`` ...) and names
OpenAI does not know either are refused with a 400, as OpenAI answers an unrecognized
argument. Inside messages and tools, unknown members are ignored. Function ``tools`` (with
``tool_choice``, assistant ``tool_calls`` and ``tool`` messages) are passed through to models
whose provider supports them; other models answer 400 rather than dropping them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aimesh_common import jsonlimits
from aimesh_common.limits import MAX_ASK_TOP_K
from aimesh_gateway.schemas.common import MetadataFilter, ModelAlias, RequestModel, TaskModel


class _Lenient(RequestModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Lenient):
    type: str = Field(examples=["text"])
    text: str | None = None


FUNCTION_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# The router's limits on stop sequences (aimesh_llm_router.stops), checked here for a 422.
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 200
# The most tokens a request may ask for (also POST /v1/conversations/{id}/messages); an
# alias's own maximum caps it further.
MAX_COMPLETION_TOKENS = 1_000_000


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
                parsed = jsonlimits.loads(value, "arguments", max_depth=jsonlimits.MAX_BODY_DEPTH)
            except jsonlimits.JsonLimitError as error:
                raise ValueError(str(error)) from None
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


class RagOptions(RequestModel):
    """How a ``rag:<collection>`` model answers; OpenAI SDKs send it with
    ``extra_body={"rag": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    model: ModelAlias | None = Field(
        None, description="Alias that writes the answer (default: the server's default alias)."
    )
    top_k: int | None = Field(
        None, ge=1, le=MAX_ASK_TOP_K, description="Chunks to retrieve as sources (default 5)."
    )
    filter: MetadataFilter = None
    rerank: bool | None = Field(
        None, description="Rerank the sources (default: the collection's setting)."
    )
    sources_in_content: bool | None = Field(
        None,
        description="Append the numbered sources to the content as text (default: the "
        "server's AIMESH_RAG_SOURCES_IN_CONTENT, on); the annotations carry them either way.",
    )


# OpenAI chat parameters accepted and ignored: they change nothing here that a client relies
# on (sampling details, logging and routing hints of OpenAI's own service).
IGNORED_CHAT_PARAMETERS = frozenset(
    {
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "top_p",
        "service_tier",
        "store",
        "metadata",
        "prompt_cache_key",
        "safety_identifier",
        "reasoning_effort",
        "verbosity",
    }
)
# OpenAI chat parameters whose effect aimesh cannot give: 400 rather than an answer that
# silently lacks it (a JSON-schema reply, audio, the deprecated ``functions``).
UNSUPPORTED_CHAT_PARAMETERS = frozenset(
    {
        "response_format",
        "audio",
        "modalities",
        "prediction",
        "web_search_options",
        "functions",
        "function_call",
    }
)


def refused_parameters(extra: dict[str, Any] | None, ignored: frozenset[str]) -> str | None:
    """The 400 detail for the top-level members of a request to an OpenAI route that are
    neither fields of its model nor in ``ignored``; None when there are none."""
    names = sorted(set(extra or {}) - ignored)
    if not names:
        return None
    unsupported = [name for name in names if name in UNSUPPORTED_CHAT_PARAMETERS]
    if unsupported:
        return f"Unsupported request argument supplied: {', '.join(unsupported)}"
    return f"Unrecognized request argument supplied: {', '.join(names)}"


def openai_request_schema(
    example: dict[str, Any], ignored: frozenset[str]
) -> Callable[[dict[str, Any]], None]:
    """``json_schema_extra`` of a request model of an OpenAI route: the model keeps unknown
    members (``extra="allow"``) only so the route can refuse them with OpenAI's 400, so the
    schema says what is accepted: its fields, and ``ignored`` in the description."""

    def edit(schema: dict[str, Any]) -> None:
        schema.pop("additionalProperties", None)
        schema["examples"] = [example]
        schema["description"] = (
            "Other OpenAI parameters accepted and ignored: "
            f"{', '.join(sorted(ignored))}. Any other member is a 400."
        )

    return edit


class ChatCompletionRequest(_Lenient):
    model_config = ConfigDict(
        # Kept, so the route can refuse what is neither a field nor ignored (400).
        extra="allow",
        json_schema_extra=openai_request_schema(
            {"model": "default", "messages": [{"role": "user", "content": "Say hello."}]},
            IGNORED_CHAT_PARAMETERS,
        ),
    )

    model: TaskModel = None
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(
        None, ge=1, le=MAX_COMPLETION_TOKENS, description="Most tokens to generate."
    )
    max_completion_tokens: int | None = Field(
        None,
        ge=1,
        le=MAX_COMPLETION_TOKENS,
        description="Newer name of max_tokens; wins when both are set.",
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
    rag: RagOptions | None = Field(
        None,
        description='Only with a "rag:<collection>" model: the answering alias and the '
        "retrieval settings.",
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

    def refused(self) -> str | None:
        """The 400 detail for top-level parameters this route does not take, if any."""
        return refused_parameters(self.model_extra, IGNORED_CHAT_PARAMETERS)

    def token_limit(self) -> int:
        """The limit for the router: 0 means the alias's configured maximum."""
        return self.max_completion_tokens or self.max_tokens or 0


class SourceCitation(BaseModel):
    """OpenAI's ``url_citation`` with the source chunk's own fields beside it."""

    start_index: int = Field(ge=0, description="Start of the cited span in content.")
    end_index: int = Field(ge=0, description="End of the cited span (exclusive), after [n].")
    url: str = Field(description="aimesh://<collection>/<document id>#<chunk id>")
    title: str = Field(description="The document's title metadata, else its id.")
    source: int = Field(ge=1, description='The number the answer uses ("[1]").')
    document_id: str
    chunk_id: str
    text: str = Field(description="Text of the cited chunk.")


class Annotation(BaseModel):
    type: Literal["url_citation"] = "url_citation"
    url_citation: SourceCitation


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="null when the model only called tools.")
    tool_calls: list[ToolCall] | None = Field(
        None,
        description="Tools the model called (finish_reason tool_calls); omitted if none.",
        exclude_if=lambda calls: calls is None,
    )
    annotations: list[Annotation] | None = Field(
        None,
        description='The sources a "rag:" answer cites, one per cited span; omitted otherwise.',
        exclude_if=lambda annotations: annotations is None,
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
