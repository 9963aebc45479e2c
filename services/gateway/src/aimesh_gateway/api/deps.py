"""Typed dependencies of the routes: settings, backends, call options and the caller."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from aimesh_gateway.core.backends import Backends
from aimesh_gateway.core.config import Settings
from aimesh_gateway.core.errors import request_id_of
from aimesh_gateway.core.security import AuthenticationError, Principal, Role, authenticate
from aimesh_gateway.schemas.common import COLLECTION_PATTERN

API_PREFIX = "/v1"


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_backends(request: Request) -> Backends:
    backends: Backends = request.app.state.backends
    return backends


SettingsDep = Annotated[Settings, Depends(get_settings)]
BackendsDep = Annotated[Backends, Depends(get_backends)]


@dataclass(frozen=True)
class CallOptions:
    """Per-call gRPC options: the deadline and the request id as ``x-request-id`` metadata."""

    timeout: float
    metadata: tuple[tuple[str, str], ...]


def get_call_options(request: Request, settings: SettingsDep) -> CallOptions:
    request_id = request_id_of(request)
    metadata = (("x-request-id", request_id),) if request_id else ()
    return CallOptions(timeout=settings.request_timeout_seconds, metadata=metadata)


CallOptionsDep = Annotated[CallOptions, Depends(get_call_options)]

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key or an HS256 JWT (`aud` aimesh, tenant in `tenant_id`).",
)


def get_principal(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The authenticated caller; 401 with ``WWW-Authenticate: Bearer`` otherwise."""
    if credentials is None:
        raise HTTPException(
            401,
            "missing credential: send Authorization: Bearer <API key or JWT>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        principal = authenticate(credentials.credentials, settings)
    except AuthenticationError as error:
        raise HTTPException(
            401, error.message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from None
    # For the access log (the tenant, never the credential).
    request.state.tenant_id = principal.tenant_id
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_role(role: Role) -> Callable[[Principal], Principal]:
    """A dependency that passes principals holding ``role`` (or a higher one); 403 otherwise."""

    def dependency(principal: CurrentPrincipal) -> Principal:
        if not principal.has_role(role):
            raise HTTPException(403, f"this operation needs the role {role.name.lower()}")
        return principal

    return dependency


UserPrincipal = Annotated[Principal, Depends(require_role(Role.USER))]
EditorPrincipal = Annotated[Principal, Depends(require_role(Role.EDITOR))]


CollectionPath = Annotated[
    str,
    Path(
        pattern=COLLECTION_PATTERN,
        description="Collection name: 1-64 characters of [A-Za-z0-9_-], starting with a "
        "letter or digit.",
        examples=["docs"],
    ),
]
