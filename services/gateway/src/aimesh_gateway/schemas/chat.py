"""The OpenAI chat completions shape (the subset aimesh serves).

Requests ignore unknown fields: OpenAI clients send many (``user``, ``seed``, ``tools`` ...)
that have no meaning here, and rejecting them would break those clients.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aimesh_gateway.schemas.common import ModelAlias


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Lenient):
    type: str = Field(examples=["text"])
    text: str | None = None


class ChatMessageIn(_Lenient):
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description='"developer" is treated as "system". Tool messages are not supported.'
    )
    content: str | list[ContentPart] | None = Field(
        None, description="Text, or a list of text content parts."
    )

    @field_validator("content")
    @classmethod
    def _text_only(cls, value: str | list[ContentPart] | None) -> str | list[ContentPart] | None:
        if isinstance(value, list):
            for part in value:
                if part.type != "text" or part.text is None:
                    raise ValueError(f"only text content parts are supported (got {part.type!r})")
        return value

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

    model: ModelAlias = "default"
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    max_completion_tokens: int | None = Field(
        None, ge=1, description="Newer name of max_tokens; wins when both are set."
    )
    temperature: float | None = Field(None, ge=0, le=2)
    stream: bool = Field(False, description="Stream the reply as server-sent events.")
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=1, description="Only one choice is supported.")

    def token_limit(self) -> int:
        """The limit for the router: 0 means the alias's configured maximum."""
        return self.max_completion_tokens or self.max_tokens or 0


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: str = Field(examples=["stop"], description='"stop" or "length".')
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
