"""``POST /v1/auth/token``: the OAuth2 token endpoint for local users (password and refresh
grants). Errors follow RFC 6749 section 5.2 (``{"error": ..., "error_description": ...}``),
which OAuth2 client libraries understand."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import JSONResponse

from aimesh_gateway.api.deps import API_PREFIX, SettingsDep, UserStoreDep
from aimesh_gateway.auth.users import TokenPair, UserUnavailable
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.limits.http import MAX_BODY_EXTRA
from aimesh_gateway.schemas.auth import TokenError, TokenResponse
from aimesh_gateway.schemas.problem import problem_doc

router = APIRouter(prefix=f"{API_PREFIX}/auth", tags=["auth"], route_class=CheckedJSONRoute)


def _token_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def _tokens(pair: TokenPair) -> JSONResponse:
    body = TokenResponse(
        access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token
    )
    return JSONResponse(body.model_dump(), headers={"Cache-Control": "no-store"})


@router.post(
    "/token",
    openapi_extra={MAX_BODY_EXTRA: 16 * 1024},
    response_model=TokenResponse,
    responses={
        400: {"model": TokenError, "description": "Invalid grant or request."},
        503: problem_doc("Local login is not configured (AIMESH_JWT_SECRET unset)."),
    },
    summary="Get an access token (OAuth2 password or refresh_token grant)",
)
async def token(
    settings: SettingsDep,
    users: UserStoreDep,
    grant_type: Annotated[str, Form(max_length=32)],
    username: Annotated[str | None, Form(max_length=128)] = None,
    password: Annotated[str | None, Form(max_length=1024)] = None,
    refresh_token: Annotated[str | None, Form(max_length=512)] = None,
) -> JSONResponse:
    """Password grant: ``username`` + ``password``. Refresh grant: ``refresh_token`` (used
    once; the answer carries a new one). Access tokens last ``access_token_ttl_seconds``."""
    if settings.jwt_secret is None:
        return _token_error(503, "invalid_request", "local login is not configured")
    if grant_type == "password":
        if not username or not password:
            return _token_error(400, "invalid_request", "username and password are required")
        user = await users.check_password(username, password)
        if user is None:
            return _token_error(400, "invalid_grant", "wrong username or password")
        try:
            return _tokens(await users.issue(user))
        except UserUnavailable:  # disabled or deleted while its password was checked
            return _token_error(400, "invalid_grant", "wrong username or password")
    if grant_type == "refresh_token":
        if not refresh_token:
            return _token_error(400, "invalid_request", "refresh_token is required")
        pair = await users.refresh(refresh_token)
        if pair is None:
            return _token_error(400, "invalid_grant", "refresh token invalid, used or expired")
        return _tokens(pair)
    return _token_error(400, "unsupported_grant_type", "use password or refresh_token")
