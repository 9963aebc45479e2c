"""The OpenAI Responses API shape (the subset aimesh serves).

As on /v1/chat/completions: OpenAI parameters with no meaning here are accepted and ignored
(:data:`IGNORED_RESPONSE_PARAMETERS`); parameters whose effect aimesh cannot give, and names
OpenAI does not know, are refused with a 400 naming them, never dropped. Input items and
tools of kinds aimesh cannot serve (images, files, web search ...) are refused the same way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aimesh_common import jsonlimits
from aimesh_gateway.schemas.chat import (
    FUNCTION_NAME_PATTERN,
    MAX_COMPLETION_TOKENS,
    openai_request_schema,
    refused_parameters,
)
from aimesh_gateway.schemas.common import RequestModel, TaskModel

# The longest id aimesh accepts for a response (the router's limit too).
MAX_RESPONSE_ID_CHARS = 128
RESPONSE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
MAX_INPUT_ITEMS = 1000
MAX_TEXT_CHARS = 1_000_000

IGNORED_RESPONSE_PARAMETERS = frozenset(
    {
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "service_tier",
        "reasoning",
        "top_logprobs",
        "stream_options",
    }
)
# OpenAI Responses parameters whose effect aimesh cannot give: 400 rather than an answer
# that silently lacks it.
UNSUPPORTED_RESPONSE_PARAMETERS = frozenset(
    {"conversation", "prompt", "max_tool_calls", "context_management"}
)


class _Lenient(RequestModel):
    model_config = ConfigDict(extra="ignore")


class InputContentPart(_Lenient):
    type: str = Field(examples=["input_text"])
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS)


class InputItem(_Lenient):
    """One input item: a message, a function call the model made, or its output. The kind
    is checked by the route, which names an unsupported one in its 400."""

    type: str = Field(
        "message", description='"message" (default), "function_call" or "function_call_output".'
    )
    id: str | None = Field(None, max_length=MAX_RESPONSE_ID_CHARS)
    role: Literal["user", "system", "developer", "assistant"] | None = None
    content: str | list[InputContentPart] | None = Field(None)
    call_id: str | None = Field(None, min_length=1, max_length=256)
    name: str | None = Field(None, pattern=FUNCTION_NAME_PATTERN)
    arguments: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    output: str | None = Field(None, max_length=MAX_TEXT_CHARS)

    @field_validator("arguments")
    @classmethod
    def _json_arguments(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            try:
                parsed = jsonlimits.loads(value, "arguments", max_depth=jsonlimits.MAX_BODY_DEPTH)
            except jsonlimits.JsonLimitError as error:
                raise ValueError(str(error)) from None
            except ValueError:
                raise ValueError("arguments must be JSON text") from None
            if not isinstance(parsed, dict):
                raise ValueError("arguments must be a JSON object")
        return value


class FunctionTool(_Lenient):
    type: Literal["function"]
    name: str = Field(pattern=FUNCTION_NAME_PATTERN, examples=["get_weather"])
    description: str | None = Field(None, max_length=4096)
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments.")
    strict: bool | None = None


class FileSearchTool(_Lenient):
    type: Literal["file_search"]
    vector_store_ids: list[str] = Field(
        min_length=1, max_length=8, description="Collections of your tenant to search."
    )
    max_num_results: int | None = Field(None, ge=1, le=50)


class OtherTool(_Lenient):
    """A tool of a kind aimesh does not serve; the route refuses it, naming its type."""

    type: str


Tool = Annotated[FunctionTool | FileSearchTool | OtherTool, Field(union_mode="left_to_right")]


class FunctionToolChoice(_Lenient):
    type: Literal["function"]
    name: str = Field(pattern=FUNCTION_NAME_PATTERN)


class TextFormat(_Lenient):
    type: Literal["text", "json_schema", "json_object"] = "text"
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = Field(None, max_length=4096)
    strict: bool | None = None

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @model_validator(mode="after")
    def _schema_named(self) -> TextFormat:
        if self.type == "json_schema" and (self.name is None or self.schema_ is None):
            raise ValueError('a "json_schema" format needs a name and a schema')
        return self

    def response_format(self) -> dict[str, Any] | None:
        """OpenAI's chat ``response_format`` for this format; None for plain text."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        spec: dict[str, Any] = {"name": self.name, "schema": self.schema_}
        if self.description is not None:
            spec["description"] = self.description
        if self.strict is not None:
            spec["strict"] = self.strict
        return {"type": "json_schema", "json_schema": spec}


class TextConfig(_Lenient):
    format: TextFormat = Field(default_factory=TextFormat)


Metadata = Annotated[
    dict[
        Annotated[str, Field(max_length=64)],
        Annotated[str, Field(max_length=512)],
    ],
    Field(max_length=16, description="Up to 16 keys (64 characters) with string values (512)."),
]


class CreateResponseRequest(_Lenient):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra=openai_request_schema(
            {"model": "default", "input": "Say hello."}, IGNORED_RESPONSE_PARAMETERS
        ),
    )

    model: TaskModel = None
    input: str | list[InputItem] = Field(
        description="Text (one user message) or a list of input items."
    )
    instructions: str | None = Field(
        None,
        max_length=MAX_TEXT_CHARS,
        description="A system message for this response only (not carried over by "
        "previous_response_id).",
    )
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_COMPLETION_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(
        None, ge=0, le=1, description="Only 1 (the default) is served; any other value is a 400."
    )
    metadata: Metadata | None = None
    store: bool = Field(True, description="Keep the response (GET, previous_response_id).")
    stream: bool = Field(False, description="Stream the response as typed server-sent events.")
    background: bool = Field(False, description="Only false is served.")
    previous_response_id: str | None = Field(
        None, pattern=RESPONSE_ID_PATTERN, description="A stored response to continue."
    )
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | FunctionToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    include: list[str] | None = Field(None, max_length=16)
    truncation: Literal["disabled", "auto"] | None = Field(
        None, description='Only "disabled": a context too long for the model is a 400.'
    )

    @field_validator("input")
    @classmethod
    def _input_bounds(cls, value: str | list[InputItem]) -> str | list[InputItem]:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("input must not be empty")
            if len(value) > MAX_TEXT_CHARS:
                raise ValueError(f"input must have at most {MAX_TEXT_CHARS} characters")
        elif not 1 <= len(value) <= MAX_INPUT_ITEMS:
            raise ValueError(f"input must hold 1 to {MAX_INPUT_ITEMS} items")
        return value

    def refused(self) -> str | None:
        """The 400 detail for top-level parameters this route does not take, if any."""
        names = set(self.model_extra or ())
        unsupported = sorted(names & UNSUPPORTED_RESPONSE_PARAMETERS)
        if unsupported:
            return f"Unsupported request argument supplied: {', '.join(unsupported)}"
        return refused_parameters(self.model_extra, IGNORED_RESPONSE_PARAMETERS)


# ------------------------------------------------------------------ what is answered


class OutputTextAnnotation(BaseModel):
    """A ``file_citation``: the cited document of a file_search collection."""

    type: Literal["file_citation"] = "file_citation"
    file_id: str = Field(description="The cited document's id.")
    filename: str
    index: int = Field(ge=0, description="Where in the text the citation ends.")


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[OutputTextAnnotation] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class FunctionCallItem(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"] = "completed"


class FileSearchResult(BaseModel):
    file_id: str
    filename: str
    score: float
    text: str
    attributes: dict[str, Any] = Field(default_factory=dict)


class FileSearchCallItem(BaseModel):
    type: Literal["file_search_call"] = "file_search_call"
    id: str
    status: Literal["in_progress", "searching", "completed", "incomplete", "failed"]
    queries: list[str]
    results: list[FileSearchResult] | None = None


OutputItem = Annotated[
    OutputMessage | FunctionCallItem | FileSearchCallItem, Field(discriminator="type")
]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int = Field(ge=0)
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = Field(ge=0)
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = Field(ge=0)


class ResponseError(BaseModel):
    code: str = Field(examples=["server_error"])
    message: str


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseObject(BaseModel):
    """A response as OpenAI's SDKs read it."""

    id: str = Field(examples=["resp_3f2c9a0e1b7d4e6f8a9b0c1d2e3f4a5b"])
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: Literal["completed", "failed", "in_progress", "incomplete", "cancelled"]
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str = Field(description="Alias that served the response.", examples=["default"])
    output: list[OutputItem]
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    tool_choice: Any = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    store: bool = True
    background: bool = False
    user: str | None = None


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: Literal[True] = True


class InputText(BaseModel):
    type: Literal["input_text", "output_text"] = "input_text"
    text: str


class InputMessageItem(BaseModel):
    type: Literal["message"] = "message"
    id: str
    role: Literal["user", "system", "developer", "assistant"]
    status: Literal["completed"] = "completed"
    content: list[InputText]


class FunctionCallOutputItem(BaseModel):
    type: Literal["function_call_output"] = "function_call_output"
    id: str
    call_id: str
    output: str
    status: Literal["completed"] = "completed"


ListedInputItem = Annotated[
    InputMessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")
]


class InputItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ListedInputItem]
    first_id: str | None
    last_id: str | None
    has_more: bool
