"""Who is calling: a bearer credential resolved to a principal (subject, tenant, roles).

Two kinds of credential are accepted:

* the bootstrap admin API key (``AIMESH_ADMIN_API_KEY``), compared in constant time; it acts
  as role ``admin`` in ``admin_tenant``;
* a JWT signed with HS256 and ``AIMESH_JWT_SECRET``. Only HS256 is accepted (``alg: none``
  and every other algorithm fail), and ``sub``, ``exp`` and ``aud`` are required. The tenant
  comes from the tenant claim (a token without one is rejected: it must never fall back to a
  default tenant), the roles from the roles claim (``["user"]`` when absent).

The tenant therefore always comes from the credential, never from a request body.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

import jwt

from aimesh_gateway.core.config import Settings

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class Role(IntEnum):
    """Roles are ranked: a higher role includes every lower one (admin ⊇ editor ⊇ user)."""

    USER = 1
    EDITOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role | None:
        try:
            return cls[name.upper()]
        except KeyError:
            return None


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    subject: str
    tenant_id: str
    roles: frozenset[Role]
    method: Literal["api_key", "jwt"]

    def has_role(self, required: Role) -> bool:
        return any(role >= required for role in self.roles)


class AuthenticationError(Exception):
    """The credential is missing or invalid. The message is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def authenticate(credential: str, settings: Settings) -> Principal:
    """Resolve a bearer credential to a principal, or raise :class:`AuthenticationError`."""
    if not credential:
        raise AuthenticationError("missing bearer credential")
    admin_key = settings.admin_api_key
    if admin_key is not None and hmac.compare_digest(
        credential.encode(), admin_key.get_secret_value().encode()
    ):
        return Principal(
            subject="admin-api-key",
            tenant_id=settings.admin_tenant,
            roles=frozenset({Role.ADMIN}),
            method="api_key",
        )
    if settings.jwt_secret is None or credential.count(".") != 2:
        raise AuthenticationError("invalid credential")
    return _principal_from_jwt(credential, settings)


def _principal_from_jwt(token: str, settings: Settings) -> Principal:
    assert settings.jwt_secret is not None
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=["HS256"],
            audience=settings.jwt_audience,
            options={"require": ["sub", "exp", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("token expired") from None
    except jwt.InvalidAudienceError:
        raise AuthenticationError("token audience not accepted") from None
    except jwt.MissingRequiredClaimError as error:
        raise AuthenticationError(f"token lacks the required claim {error.claim!r}") from None
    except jwt.PyJWTError:
        raise AuthenticationError("invalid token") from None

    tenant = claims.get(settings.jwt_tenant_claim)
    if not isinstance(tenant, str) or not tenant:
        raise AuthenticationError(f"token lacks the tenant claim {settings.jwt_tenant_claim!r}")
    if not TENANT_PATTERN.match(tenant):
        raise AuthenticationError("token tenant is not a valid tenant id")
    return Principal(
        subject=str(claims["sub"]),
        tenant_id=tenant,
        roles=_roles(claims.get(settings.jwt_roles_claim, ["user"])),
        method="jwt",
    )


def _roles(value: object) -> frozenset[Role]:
    """Roles from a list of names or an OAuth-style space-separated string; unknown ones drop."""
    if isinstance(value, str):
        names = value.split()
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        names = list(value)
    else:
        raise AuthenticationError("token roles claim must be a list of strings")
    return frozenset(role for name in names if (role := Role.parse(name)) is not None)
