"""Every error the gateway answers is an RFC 9457 problem (``application/problem+json``).

One set of exception handlers covers HTTP errors (including the router's 404/405 and the
auth 401/403), request validation (422 naming the offending fields; malformed JSON is 400),
gRPC status codes of the backends, and anything unexpected (500 with a generic message; the
details go to the log, never to the caller).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from aimesh_common.errors import PERSONAL_DATA_TYPES_KEY, RETRY_AFTER_KEY

log = logging.getLogger("aimesh.gateway.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
GENERIC_INTERNAL = "internal error; the server logged the details"

# Backend status -> (HTTP status, detail shown to the caller or None to pass the backend's
# own message on). Codes whose messages describe the caller's request pass them on; codes
# whose messages may describe the inside of the mesh (addresses, stack state) do not.
_GRPC_STATUS: dict[grpc.StatusCode, tuple[int, str | None]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, None),
    grpc.StatusCode.OUT_OF_RANGE: (400, None),
    grpc.StatusCode.NOT_FOUND: (404, None),
    grpc.StatusCode.ALREADY_EXISTS: (409, None),
    grpc.StatusCode.FAILED_PRECONDITION: (409, None),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, None),
    grpc.StatusCode.PERMISSION_DENIED: (403, None),
    grpc.StatusCode.UNAUTHENTICATED: (401, None),
    grpc.StatusCode.UNAVAILABLE: (503, "a backend service is unavailable; retry later"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "a backend service did not answer in time"),
}
_GRPC_OTHER = (502, "a backend service failed; the gateway logged the details")
# Statuses after which a retry is worth it; they carry Retry-After.
_RETRY_AFTER_SECONDS = {429: "1", 503: "1"}


def request_id_of(request: Request) -> str | None:
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


def problem_body(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    instance: str | None = None,
    request_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON members of a problem document (``type`` is always ``about:blank``)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or _phrase(status),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if request_id:
        body["request_id"] = request_id
    if extra:
        body.update(extra)
    return body


def problem_response(
    request: Request,
    status: int,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """A problem+json response about ``request``. On the OpenAI-compatible routes the body also
    carries OpenAI's ``error`` object (an RFC 9457 extension member), so OpenAI SDKs read the
    message and type while every other client still gets a plain problem."""
    return JSONResponse(
        path_problem_body(
            status, detail, path=request.url.path, request_id=request_id_of(request), extra=extra
        ),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def path_problem_body(
    status: int,
    detail: str | None,
    *,
    path: str | None,
    request_id: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The problem about a request to ``path``, with OpenAI's ``error`` object on the
    OpenAI-compatible routes (see :func:`problem_response`)."""
    if path in OPENAI_PATHS or (path is not None and path.startswith(OPENAI_PATH_PREFIXES)):
        code = (extra or {}).get("code")
        error = openai_error(
            status, detail or _phrase(status), code if isinstance(code, str) else None
        )
        extra = {**(extra or {}), "error": error}
    return problem_body(status, detail, instance=path, request_id=request_id, extra=extra)


OPENAI_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"}
)
# Paths under which every route is OpenAI-compatible (/v1/responses/{id}, ...).
OPENAI_PATH_PREFIXES = ("/v1/responses", "/v1/files", "/v1/vector_stores")
_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object for ``status`` (``code``: the problem's own, if it has one)."""
    kind = _OPENAI_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")
    if code is None and status == 429:
        code = "rate_limit_exceeded"
    return {"message": message, "type": kind, "param": None, "code": code}


def backend_error_fields(
    code: grpc.StatusCode, details: str | None, status: int
) -> dict[str, str | None]:
    """Log fields of a failed backend call. The details of a caller's error (4xx) may quote
    what the caller sent (a prompt, tool arguments), so only a backend fault's are logged."""
    fields: dict[str, str | None] = {"grpc_code": code.name}
    if status >= 500:
        fields["grpc_details"] = details
    return fields


def grpc_status_to_http(code: grpc.StatusCode, details: str | None) -> tuple[int, str]:
    """The HTTP status and the caller-safe detail for a backend's gRPC status."""
    status, fixed = _GRPC_STATUS.get(code, _GRPC_OTHER)
    return status, fixed or details or _phrase(status)


# ``code`` of the 422 problem for a request refused for the personal data it holds.
PERSONAL_DATA_CODE = "personal_data_blocked"


def personal_data_types(error: grpc.aio.AioRpcError) -> list[str] | None:
    """The entity types of a request the llm-router refused for its personal data (the
    policy ``block``: INVALID_ARGUMENT with the ``aimesh-personal-data-types`` trailer), or
    None for any other error."""
    if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return None
    for key, value in error.trailing_metadata() or ():
        if key == PERSONAL_DATA_TYPES_KEY and isinstance(value, str):
            return [kind for kind in value.split(",") if kind]
    return None


def asked_retry_after(error: grpc.aio.AioRpcError) -> str | None:
    """The wait (whole seconds) the model provider asked for behind a failed router call
    (its Retry-After, passed on by the router in the ``aimesh-retry-after`` trailer)."""
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_KEY and isinstance(value, str) and value.isdigit():
            return value
    return None


def rpc_error_to_http(error: grpc.aio.AioRpcError) -> tuple[int, str]:
    """:func:`grpc_status_to_http` for a failed call; 422 for a request refused for the
    personal data it holds (it is well-formed, but its content cannot be processed)."""
    if personal_data_types(error) is not None:
        return 422, error.details() or _phrase(422)
    return grpc_status_to_http(error.code(), error.details())


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _field(loc: tuple[int | str, ...] | list[int | str]) -> str:
    return ".".join(str(part) for part in loc)


class OpenAIClientError(StarletteHTTPException):
    """An HTTP error that also carries OpenAI's ``error`` object off the OpenAI paths: the
    answer to an OpenAI SDK calling a native route of the same path (POST /v1/conversations),
    so the SDK raises it with its message."""


async def http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    # Extension members of a refusal that says more (a budget's scope and window, its code).
    given = getattr(exc, "extra", None)
    extra: dict[str, Any] | None = dict(given) if isinstance(given, dict) else None
    if isinstance(exc, OpenAIClientError):
        code = (extra or {}).get("code")
        error = openai_error(
            exc.status_code,
            detail or _phrase(exc.status_code),
            code if isinstance(code, str) else None,
        )
        extra = {**(extra or {}), "error": error}
    return problem_response(request, exc.status_code, detail, headers=exc.headers, extra=extra)


async def validation_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    malformed = [error for error in errors if error.get("type") == "json_invalid"]
    if malformed:
        reason = malformed[0].get("ctx", {}).get("error", "JSON decode error")
        position = malformed[0].get("loc", ("body", 0))[-1]
        return problem_response(
            request, 400, f"malformed JSON body: {reason} (at character {position})"
        )
    # Never echo the offending input: it may be large or contain secrets.
    fields = [
        {
            "field": _field(error.get("loc", ())),
            "message": str(error.get("msg", "invalid value")),
            "type": str(error.get("type", "value_error")),
        }
        for error in errors
    ]
    summary = "; ".join(f"{item['field']}: {item['message']}" for item in fields[:5])
    return problem_response(
        request, 422, f"request validation failed: {summary}", extra={"errors": fields}
    )


async def grpc_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, grpc.aio.AioRpcError)
    code = exc.code()
    status, detail = rpc_error_to_http(exc)
    # 502 is a backend bug; 429/503/504 are load or outages (retryable); 4xx are the caller's.
    level = logging.ERROR if status == 502 else logging.WARNING if status >= 429 else logging.INFO
    log.log(
        level,
        "backend call failed",
        extra={
            **backend_error_fields(code, exc.details(), status),
            "http_status": status,
            "request_id": request_id_of(request),
        },
    )
    retry_after = _RETRY_AFTER_SECONDS.get(status)
    if retry_after is not None:
        retry_after = asked_retry_after(exc) or retry_after
    headers = {"Retry-After": retry_after} if retry_after else None
    types = personal_data_types(exc)
    extra = {"code": PERSONAL_DATA_CODE, "entity_types": types} if types is not None else None
    return problem_response(request, status, detail, headers=headers, extra=extra)


async def unexpected_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """Backstop for errors raised outside the request middleware (see ``middleware``)."""
    log.error("unhandled error", exc_info=exc, extra={"request_id": request_id_of(request)})
    headers = {"X-Request-ID": rid} if (rid := request_id_of(request)) else None
    return problem_response(request, 500, GENERIC_INTERNAL, headers=headers)


def install_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(RequestValidationError, validation_exception_handler)
    app.add_exception_handler(grpc.aio.AioRpcError, grpc_exception_handler)
    app.add_exception_handler(Exception, unexpected_exception_handler)
