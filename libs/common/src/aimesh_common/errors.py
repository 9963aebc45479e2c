"""Domain errors that map to one gRPC status code each.

Servicers raise these; :class:`aimesh_common.interceptors.ErrorInterceptor` turns them
into a status with a readable message, so servicers carry no try/except boilerplate.
The gateway maps the same codes to HTTP statuses.
"""

from __future__ import annotations

import grpc


class AimeshError(Exception):
    """Base of all errors that a caller should see with a readable message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(AimeshError):
    """The request is malformed; the message names the offending field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AimeshError):
    """The addressed collection, document or model does not exist (for this tenant)."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(AimeshError):
    """The system is not in a state where the request can run (e.g. dimension mismatch)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(AimeshError):
    """Overload or quota: the caller should retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(AimeshError):
    """A backend this service depends on cannot be reached."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(AimeshError):
    """An upstream call did not finish in time."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
