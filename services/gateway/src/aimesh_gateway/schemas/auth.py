"""OAuth2 token endpoint answers (RFC 6749 section 5)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str


class TokenError(BaseModel):
    error: Literal["invalid_request", "invalid_grant", "unsupported_grant_type"]
    error_description: str
