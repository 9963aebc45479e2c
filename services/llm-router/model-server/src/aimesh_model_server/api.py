"""The OpenAI chat-completions protocol over an :class:`~aimesh_model_server.engine.Engine`.

``POST /v1/chat/completions`` (streamed as server-sent events or whole), ``GET /v1/models``,
``GET /health`` (also ``/healthz``, ``/readyz``) and ``GET /metrics``. What vLLM, TGI and
llama.cpp's server answer to the same requests, so any of them can replace this server
behind the router's ``openai`` provider:

* usage is exact: the prompt's and the completion's tokens counted by the model's own
  tokenizer (streamed with ``stream_options.include_usage``);
* ``stop`` strings never appear in the reply, even split across tokens;
* a client that goes away, before or after the first token, streamed or not, stops its
  generation at the engine's next step;
* a full server answers 429 at once; bad input answers 400 with OpenAI's error object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from aimesh_model_server import metrics
from aimesh_model_server.engine import Engine, EngineFailed, Generation, Overloaded, Sampling

log = logging.getLogger("aimesh.model_server.api")

MAX_STOP_STRINGS = 4


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields this server acts on; other OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    # vLLM's extension: the reply is not ended before this many tokens (benchmarks, tests).
    min_tokens: int = Field(0, ge=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="One choice per request.")
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [stop for stop in stops if stop]


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def _error(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


class TextAssembler:
    """Turns token ids into text deltas, holding back what might start a stop string or an
    unfinished character, and cutting the text where the first stop string begins.

    Decoding is incremental (as vLLM does it): each new token decodes only a short window,
    the tokens since the last emitted text plus those just before them as context, so a
    long reply costs linear time, not a decode of the whole reply per token.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], stops: Sequence[str]) -> None:
        self._decode = decode
        self._stops = list(stops)
        self._longest_stop = max((len(stop) for stop in self._stops), default=0)
        self._ids: list[int] = []
        self._prefix = 0  # the window's context starts here
        self._read = 0  # the tokens from here on are not yet text
        self._text = ""  # the reply's text so far
        self._emitted = 0  # characters of _text handed out
        self.stopped = False

    def push(self, token: int) -> str:
        self._ids.append(token)
        if not self._advance(final=False):
            return ""
        return self._release()

    def flush(self) -> str:
        if self.stopped:
            return ""
        self._advance(final=True)
        return self._take(len(self._text))

    def _advance(self, *, final: bool) -> bool:
        """Append the new tokens' text; False while they end inside a character."""
        context = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(context) or (text.endswith("\ufffd") and not final):
            return False
        self._text += text[len(context) :]
        self._prefix, self._read = self._read, len(self._ids)
        return True

    def _release(self) -> str:
        horizon = max(0, self._emitted - self._longest_stop)
        found = [i for stop in self._stops if (i := self._text.find(stop, horizon)) >= 0]
        if found:
            self.stopped = True
            return self._take(min(found))
        hold = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(self._text)), 0, -1):
                if self._text.endswith(stop[:size]):
                    hold = max(hold, size)
                    break
        return self._take(len(self._text) - hold)

    def _take(self, end: int) -> str:
        delta = self._text[self._emitted : end] if end > self._emitted else ""
        self._emitted = max(self._emitted, end)
        return delta


def create_app(engine: Engine, *, model_name: str, settings: Any) -> FastAPI:
    """The HTTP app serving ``engine`` as ``model_name``."""
    app = FastAPI(title="aimesh model server", docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        message = f"{field}: {first.get('msg', 'invalid')}" if field else "invalid request"
        metrics.REQUESTS.labels("invalid").inc()
        return _error(400, message, "invalid_request", field)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        outcome = "overloaded" if error.status == 429 else "invalid"
        metrics.REQUESTS.labels(outcome if error.status < 500 else "failed").inc()
        return _error(error.status, error.message, error.code, error.param)

    @app.get("/health")
    @app.get("/healthz")
    @app.get("/readyz")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": model_name, "engine": engine.name}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "aimesh"}],
        }

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        body: ChatCompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        arrived = time.perf_counter()
        if body.model != model_name:
            raise ApiError(
                404, f"the model {body.model!r} does not exist", "model_not_found", "model"
            )
        if body.tools:
            raise ApiError(400, "this model does not call tools", "unsupported_parameter", "tools")
        stops = body.stop_strings()
        if len(stops) > MAX_STOP_STRINGS:
            raise ApiError(
                400, f"at most {MAX_STOP_STRINGS} stop strings", "invalid_request", "stop"
            )
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        prompt = engine.encode_chat(messages)
        room = settings.context_tokens - len(prompt)
        if room <= 0:
            raise ApiError(
                400,
                f"the prompt has {len(prompt)} tokens; this model's context is "
                f"{settings.context_tokens}",
                "context_length_exceeded",
                "messages",
            )
        wanted = body.max_completion_tokens or body.max_tokens or settings.default_max_tokens
        sampling = Sampling(
            max_tokens=min(wanted, room),
            min_tokens=min(body.min_tokens, wanted, room),
            temperature=body.temperature or 0.0,
            top_p=body.top_p or 1.0,
            repetition_penalty=settings.repetition_penalty,
            no_repeat_ngram_size=settings.no_repeat_ngram_size,
            seed=body.seed,
        )
        try:
            generation = engine.submit(prompt, sampling)
        except Overloaded as error:
            raise ApiError(429, str(error), "overloaded") from None
        completion_id = f"chatcmpl-{secrets.token_hex(12)}"
        created = int(time.time())
        assembler = TextAssembler(engine.decode, stops)
        run = _Run(generation, assembler, arrived)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            chunks = _stream(run, completion_id, created, model_name, len(prompt), include_usage)
            return StreamingResponse(chunks, media_type="text/event-stream")
        return await _whole(run, request, completion_id, created, model_name, len(prompt))

    return app


class _Run:
    """One generation read to its end (or its stop string), counting its tokens."""

    def __init__(self, generation: Generation, assembler: TextAssembler, arrived: float) -> None:
        self.generation = generation
        self.assembler = assembler
        self.arrived = arrived
        self.completion_tokens = 0

    async def deltas(self) -> AsyncIterator[str]:
        async for token in self.generation:
            if self.completion_tokens == 0:
                metrics.FIRST_TOKEN.observe(time.perf_counter() - self.arrived)
            self.completion_tokens += 1
            delta = self.assembler.push(token)
            if delta:
                yield delta
            if self.assembler.stopped:
                self.generation.cancel()
                return
        tail = self.assembler.flush()
        if tail:
            yield tail

    @property
    def finish_reason(self) -> str:
        if self.assembler.stopped:
            return "stop"
        return "length" if self.generation.finish_reason == "length" else "stop"

    def usage(self, prompt_tokens: int) -> dict[str, int]:
        metrics.TOKENS.labels("prompt").inc(prompt_tokens)
        metrics.TOKENS.labels("completion").inc(self.completion_tokens)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": prompt_tokens + self.completion_tokens,
        }


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _whole(
    run: _Run, request: Request, completion_id: str, created: int, model: str, prompt_tokens: int
) -> JSONResponse:
    async def collect() -> str:
        return "".join([delta async for delta in run.deltas()])

    work = asyncio.ensure_future(collect())
    gone = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not work.done():
        # The client left: stop generating for nobody.
        run.generation.cancel()
        work.cancel()
        metrics.REQUESTS.labels("cancelled").inc()
        return JSONResponse({}, status_code=499)
    try:
        text = work.result()
    except EngineFailed as error:
        metrics.REQUESTS.labels("failed").inc()
        return _error(503, str(error), "engine_failed")
    metrics.REQUESTS.labels("ok").inc()
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": run.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": run.usage(prompt_tokens),
        }
    )


async def _stream(
    run: _Run, completion_id: str, created: int, model: str, prompt_tokens: int, usage: bool
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    completed = False
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for delta in run.deltas():
            yield chunk({"content": delta})
        yield chunk({}, run.finish_reason)
        if usage:
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": run.usage(prompt_tokens),
            }
            yield f"data: {json.dumps(body, separators=(',', ':'))}\n\n"
        yield "data: [DONE]\n\n"
        completed = True
        metrics.REQUESTS.labels("ok").inc()
    except EngineFailed as error:
        completed = True
        metrics.REQUESTS.labels("failed").inc()
        body = {"error": {"message": str(error), "type": "server_error", "code": "engine_failed"}}
        yield f"data: {json.dumps(body)}\n\n"
    finally:
        if not completed:
            # The client went away (the response was cancelled): stop the generation.
            run.generation.cancel()
            metrics.REQUESTS.labels("cancelled").inc()
