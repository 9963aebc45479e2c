"""Domain errors that map to one gRPC status code each, and back.

Servicers raise these; :class:`aimesh_common.interceptors.ErrorInterceptor` turns them
into a status with a readable message, so servicers carry no try/except boilerplate.
The gateway maps the same codes to HTTP statuses. A service calling another aimesh
service turns the status it gets back into one of these with :func:`from_rpc_error`.
"""

from __future__ import annotations

import logging

import grpc

log = logging.getLogger("aimesh.errors")


class AimeshError(Exception):
    """Base of all errors that a caller should see with a readable message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    # Trailing metadata sent with the status (machine-readable details for the gateway).
    trailers: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(AimeshError):
    """The request is malformed; the message names the offending field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


# Trailing metadata key of a status after which the caller should wait before retrying: whole
# seconds, as the model provider asked (its Retry-After), so the gateway passes the figure on.
RETRY_AFTER_KEY = "aimesh-retry-after"

# Trailing metadata key of a PersonalDataRefused status: the entity types, comma-separated.
PERSONAL_DATA_TYPES_KEY = "aimesh-personal-data-types"


class PersonalDataRefused(InvalidArgument):
    """The request holds personal data that the privacy policy of the model asked for
    forbids sending (policy ``block``). INVALID_ARGUMENT, so no fallback retries it; the
    entity types (never the values) travel in the ``aimesh-personal-data-types`` trailer,
    from which the gateway answers 422 naming them."""

    def __init__(self, message: str, entity_types: list[str]) -> None:
        super().__init__(message)
        self.entity_types = entity_types
        self.trailers = ((PERSONAL_DATA_TYPES_KEY, ",".join(entity_types)),)


class NotFound(AimeshError):
    """The addressed collection, document or model does not exist (for this tenant)."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(AimeshError):
    """The system is not in a state where the request can run (e.g. dimension mismatch)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class AlreadyExists(AimeshError):
    """What the request would create exists already (e.g. an id chosen by the caller)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class ResourceExhausted(AimeshError):
    """Overload or quota: the caller should retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(AimeshError):
    """A backend this service depends on cannot be reached."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(AimeshError):
    """An upstream call did not finish in time."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


_CALLER_MISTAKES: dict[grpc.StatusCode, type[AimeshError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
}


def from_rpc_error(
    error: grpc.aio.AioRpcError, backend: str, *, caller_errors: bool = True
) -> AimeshError:
    """The aimesh error for a failed call to the aimesh gRPC service ``backend``.

    With ``caller_errors`` (a call that forwards what our own caller asked for), the
    backend's verdict on the request carries over with its message, which already names
    the offending field: NOT_FOUND, INVALID_ARGUMENT (and OUT_OF_RANGE), and
    FAILED_PRECONDITION. Without (a call built only from data this service checked
    itself, as the embedding client's), such a verdict is a failure of the dependency:
    UNAVAILABLE. Overload, deadline and unavailability keep their codes and name the
    backend; any other code is logged and becomes UNAVAILABLE without the backend's text.
    """
    code = error.code()
    details = error.details() or code.name.lower()
    if caller_errors:
        mistake = _CALLER_MISTAKES.get(code)
        if mistake is not None:
            return mistake(details)
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return FailedPrecondition(f"{backend} service: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(f"{backend} service is overloaded, retry later: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{backend} service did not answer in time")
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"{backend} service unavailable: {details}")
    log.warning("%s service failed", backend, extra={"code": code.name, "details": details})
    return Unavailable(f"{backend} service failed ({code.name})")
