"""Failures of the model APIs the router calls, translated into aimesh errors.

(The aimesh gRPC backends' status codes carry over through
:func:`aimesh_common.errors.from_rpc_error`.) Model APIs (OpenAI-compatible, Anthropic)
map their HTTP statuses as follows:

- 401/403: FAILED_PRECONDITION, the configured credentials were rejected (never echoed);
- 404: FAILED_PRECONDITION, the configured upstream model does not exist;
- 429: RESOURCE_EXHAUSTED;
- other 4xx (e.g. 400 context too long): INVALID_ARGUMENT with the upstream reason;
- 5xx and connection errors: UNAVAILABLE;
- timeouts: DEADLINE_EXCEEDED;
- a malformed reply (invalid JSON, HTML, unexpected shape, an empty stream): UNAVAILABLE.

Every one of these but the caller's own mistakes (INVALID_ARGUMENT) moves a call that has
not yet produced a token to the next model of its alias's chain (:mod:`resilience`).
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import sys
import time
from collections.abc import Mapping

import httpx
import httpx2
import openai
import pydantic
from langchain_core.exceptions import ContextOverflowError

from aimesh_common.errors import (
    RETRY_AFTER_KEY,
    AimeshError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)

log = logging.getLogger("aimesh.llm_router.upstream")

_MAX_REASON_CHARS = 500
# Attribute set on a mapped error when the upstream said how long to wait (seconds).
RETRY_AFTER_ATTR = "retry_after_seconds"


def parse_retry_after(headers: Mapping[str, str] | httpx.Headers | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_after(error: BaseException) -> float | None:
    """The wait an upstream asked for with this (mapped) error, if any."""
    value = getattr(error, RETRY_AFTER_ATTR, None)
    return float(value) if isinstance(value, int | float) else None


def with_retry_after(mapped: AimeshError, original: BaseException) -> AimeshError:
    """``mapped`` carrying the Retry-After of the HTTP response behind ``original``: for the
    router's retries, and in the ``aimesh-retry-after`` trailer (whole seconds, at least 1)
    for the gateway's Retry-After when the error reaches the client."""
    response = getattr(original, "response", None)
    headers = getattr(response, "headers", None)
    wait = parse_retry_after(headers) if headers is not None else None
    if wait is not None:
        setattr(mapped, RETRY_AFTER_ATTR, wait)
        mapped.trailers = (*mapped.trailers, (RETRY_AFTER_KEY, str(max(1, math.ceil(wait)))))
    return mapped


def _sdk_classes(name: str) -> tuple[type[BaseException], ...]:
    """The exception class ``name`` of every model SDK that is loaded.

    The anthropic SDK takes seconds to import, so it is imported only when an alias uses
    it; an error can only come from an SDK that is loaded.
    """
    modules = [openai]
    anthropic = sys.modules.get("anthropic")
    if anthropic is not None:
        modules.append(anthropic)
    return tuple(getattr(module, name) for module in modules)


def _reason(error: BaseException, secret: str | None) -> str:
    """The upstream's own explanation, without anything that looks like the key."""
    body = getattr(error, "body", None)
    reason: object = None
    if isinstance(body, Mapping):
        reason = body.get("message") or body.get("detail") or body.get("error")
        if isinstance(reason, Mapping):
            reason = reason.get("message")
    elif isinstance(body, str):
        reason = body
    text = str(reason) if reason else str(getattr(error, "message", error))
    if secret:
        text = text.replace(secret, "***")
    return text[:_MAX_REASON_CHARS]


def from_sdk_error(error: BaseException, secret: str | None) -> AimeshError | None:
    """The aimesh error for an exception from a model SDK call (OpenAI, Anthropic), or None.

    ``secret`` is the configured key, scrubbed from any upstream text that is passed on.
    """
    if isinstance(error, AimeshError):
        return error
    timeouts = (
        *_sdk_classes("APITimeoutError"),
        httpx.TimeoutException,
        httpx2.TimeoutException,
        TimeoutError,
    )
    if isinstance(error, timeouts):
        return DeadlineExceeded("the model provider did not answer in time")
    if isinstance(error, _sdk_classes("APIConnectionError")):
        return Unavailable("cannot reach the model provider")
    if isinstance(
        error, _sdk_classes("AuthenticationError") + _sdk_classes("PermissionDeniedError")
    ):
        return FailedPrecondition("provider rejected the configured credentials")
    status_error = isinstance(error, _sdk_classes("APIStatusError"))
    status = getattr(error, "status_code", None) if status_error else None
    if status == 429:
        return ResourceExhausted(
            f"the model provider is rate limiting requests; retry later ({_reason(error, secret)})"
        )
    if status == 404:
        return FailedPrecondition(
            f"the model provider does not serve the configured model: {_reason(error, secret)}"
        )
    if isinstance(error, ContextOverflowError):
        api_error = isinstance(error, _sdk_classes("APIError"))
        reason = _reason(error, secret) if api_error else str(error)
        return InvalidArgument(f"the input is too long for the model: {reason}")
    if status is not None:
        if status >= 500:
            return Unavailable(f"the model provider failed (HTTP {status})")
        return InvalidArgument(f"the model provider rejected the request: {_reason(error, secret)}")
    malformed = (
        *_sdk_classes("APIResponseValidationError"),
        json.JSONDecodeError,
        pydantic.ValidationError,
    )
    if isinstance(error, malformed):
        return Unavailable("the model provider sent a malformed response")
    if isinstance(error, _sdk_classes("APIError")):
        return Unavailable(f"the model provider failed: {_reason(error, secret)}")
    if isinstance(error, httpx.TransportError | httpx2.TransportError):
        # The SDKs speak httpx2; a stream read after the reply began raises its errors as is.
        return Unavailable("the connection to the model provider failed")
    if isinstance(error, _MALFORMED_REPLY):
        # What the SDK and LangChain raise on a 200 reply they cannot read: a body that is
        # not the JSON they expect ("Unexpected response type", "null value for 'choices'"),
        # or a stream without one completion chunk ("No generation chunks were returned").
        return Unavailable("the model provider sent a malformed response")
    return None


_MALFORMED_REPLY = (ValueError, TypeError, KeyError, IndexError, AttributeError)
