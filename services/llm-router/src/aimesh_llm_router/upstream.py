"""Failures of the services the router calls, translated into aimesh errors.

Two kinds of upstream: aimesh gRPC backends (retrieval, embedding), whose status codes
carry over, and OpenAI-compatible HTTP servers, whose HTTP statuses map as follows:

- 401/403: FAILED_PRECONDITION, the configured credentials were rejected (never echoed);
- 404: FAILED_PRECONDITION, the configured upstream model does not exist;
- 429: RESOURCE_EXHAUSTED;
- other 4xx (e.g. 400 context too long): INVALID_ARGUMENT with the upstream reason;
- 5xx and connection errors: UNAVAILABLE;
- timeouts: DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import grpc
import openai
from langchain_core.exceptions import ContextOverflowError

from aimesh_common.errors import (
    AimeshError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

log = logging.getLogger("aimesh.llm_router.upstream")

_MAX_REASON_CHARS = 500


def from_rpc_error(error: grpc.aio.AioRpcError, backend: str) -> AimeshError:
    """The aimesh error for a failed call to an aimesh gRPC ``backend``.

    Caller mistakes (unknown collection, bad filter) keep the backend's message, which
    already names the offending field; infrastructure failures name the backend.
    """
    code = error.code()
    details = error.details() or code.name.lower()
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(details)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return InvalidArgument(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(f"{backend} service: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(f"{backend} service is overloaded: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{backend} service did not answer in time")
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"{backend} service unavailable: {details}")
    log.warning("%s service failed", backend, extra={"code": code.name, "details": details})
    return Unavailable(f"{backend} service failed ({code.name})")


def _reason(error: openai.APIError, secret: str | None) -> str:
    """The upstream's own explanation, without anything that looks like the key."""
    body = error.body
    reason: object = None
    if isinstance(body, Mapping):
        reason = body.get("message") or body.get("detail") or body.get("error")
        if isinstance(reason, Mapping):
            reason = reason.get("message")
    elif isinstance(body, str):
        reason = body
    text = str(reason) if reason else error.message
    if secret:
        text = text.replace(secret, "***")
    return text[:_MAX_REASON_CHARS]


def from_openai_error(error: BaseException, secret: str | None) -> AimeshError | None:
    """The aimesh error for an exception from an OpenAI-compatible call, or None.

    ``secret`` is the configured key, scrubbed from any upstream text that is passed on.
    """
    if isinstance(error, openai.APITimeoutError | asyncio.TimeoutError | TimeoutError):
        return DeadlineExceeded("the model provider did not answer in time")
    if isinstance(error, openai.APIConnectionError):
        return Unavailable("cannot reach the model provider")
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return FailedPrecondition("provider rejected the configured credentials")
    if isinstance(error, openai.RateLimitError):
        return ResourceExhausted(
            f"the model provider is rate limiting requests; retry later ({_reason(error, secret)})"
        )
    if isinstance(error, openai.NotFoundError):
        return FailedPrecondition(
            f"the model provider does not serve the configured model: {_reason(error, secret)}"
        )
    if isinstance(error, ContextOverflowError):
        reason = _reason(error, secret) if isinstance(error, openai.APIError) else str(error)
        return InvalidArgument(f"the input is too long for the model: {reason}")
    if isinstance(error, openai.APIStatusError):
        if error.status_code >= 500:
            return Unavailable(f"the model provider failed (HTTP {error.status_code})")
        return InvalidArgument(f"the model provider rejected the request: {_reason(error, secret)}")
    if isinstance(error, openai.APIError):
        return Unavailable(f"the model provider failed: {_reason(error, secret)}")
    return None
