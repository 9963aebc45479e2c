"""Who is calling: a bearer credential resolved to a principal (subject, tenant, roles).

Four kinds of credential are accepted (:class:`Authenticator`):

* API keys (``am_<prefix>_<secret>``) from the key store, see ``auth/keys.py``;
* RS256/ES256 JWTs from the configured OIDC issuer, see ``auth/oidc.py``;

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
import math
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

import jwt
from pydantic import SecretStr

from aimesh_gateway.auth.keys import KeyRecord, KeyStore, parse_key
from aimesh_gateway.auth.oidc import OidcError, OidcVerifier
from aimesh_gateway.core.config import Settings

BOOTSTRAP_SUBJECT = "admin-api-key"
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
    rpm: int | None = None
    """Per-principal overrides of the default limits (set on API keys)."""
    tpm: int | None = None

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
            subject=BOOTSTRAP_SUBJECT,
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
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthenticationError("invalid token") from None
    if header.get("alg") != "HS256":
        # Checked before decoding so a public key can never be used as an HMAC secret.
        raise AuthenticationError("invalid token (algorithm not accepted)")
    secrets = [settings.jwt_secret]
    if settings.jwt_previous_secret is not None:
        secrets.append(settings.jwt_previous_secret)
    try:
        claims = _decode_hs256(
            token, secrets, settings.jwt_audience, [settings.token_issuer, *settings.jwt_issuers]
        )
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("token expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthenticationError("token not yet valid") from None
    except jwt.InvalidAudienceError:
        raise AuthenticationError("token audience not accepted") from None
    except jwt.InvalidIssuerError:
        raise AuthenticationError("token issuer not accepted") from None
    except jwt.MissingRequiredClaimError as error:
        raise AuthenticationError(f"token lacks the required claim {error.claim!r}") from None
    except jwt.PyJWTError:
        raise AuthenticationError("invalid token") from None

    return principal_from_claims(claims, settings)


def _decode_hs256(
    token: str, secrets: list[SecretStr], audience: str, issuers: list[str]
) -> dict[str, Any]:
    """Verify with the current secret, then with the one being rotated out (if any)."""
    for index, secret in enumerate(secrets):
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                secret.get_secret_value(),
                algorithms=["HS256"],
                audience=audience,
                issuer=issuers,
                options={"require": ["sub", "exp", "aud", "iss"]},
            )
        except jwt.InvalidSignatureError:
            if index == len(secrets) - 1:
                raise
            continue
        return claims
    raise jwt.InvalidSignatureError("no secret configured")


def check_registered_claims(claims: dict[str, Any]) -> None:
    """The registered claims of RFC 7519 section 4.1 have the types it gives them: ``exp``,
    ``nbf`` and ``iat`` a NumericDate (a JSON number; PyJWT itself takes the string
    ``"1700000000"`` too), ``iss``, ``sub`` and ``jti`` a string, ``aud`` a string or an
    array of strings. Any other type fails the token, whichever verifier decoded it."""
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if name in claims and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise AuthenticationError(f"token claim {name!r} is not a NumericDate (a number)")
    for name in ("iss", "sub", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise AuthenticationError(f"token claim {name!r} is not a string")
    if "aud" in claims:
        audience = claims["aud"]
        if not isinstance(audience, str) and not (
            isinstance(audience, list) and all(isinstance(item, str) for item in audience)
        ):
            raise AuthenticationError("token claim 'aud' is not a string or array of strings")


def principal_from_claims(claims: dict[str, Any], settings: Settings) -> Principal:
    """The principal of verified claims: tenant and roles from the configured claim names."""
    check_registered_claims(claims)
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


def parse_roles(names: list[str] | tuple[str, ...]) -> frozenset[Role]:
    """Known role names to roles; unknown ones drop."""
    return frozenset(role for name in names if (role := Role.parse(name)) is not None)


MAX_KEY_PRINCIPALS = 10_000


class Authenticator:
    """Resolves any accepted credential: the static ones (:func:`authenticate`), stored API
    keys and OIDC tokens."""

    def __init__(self, settings: Settings, keys: KeyStore, oidc: OidcVerifier | None) -> None:
        self.settings = settings
        self.keys = keys
        self.oidc = oidc
        # The principal of each key, while the key store returns the same (cached) record;
        # one entry per verified key, at most MAX_KEY_PRINCIPALS (then started afresh: a
        # principal is cheap to rebuild, and the key store itself keeps only recent keys).
        self._key_principals: dict[str, tuple[KeyRecord, Principal]] = {}

    async def authenticate(self, credential: str) -> Principal:
        if parse_key(credential) is not None:
            record = await self.keys.verify(credential)
            if record is None:
                raise AuthenticationError("invalid, revoked or expired API key")
            return self._key_principal(record)
        if self.oidc is not None and credential.count(".") == 2:
            try:
                header = jwt.get_unverified_header(credential)
            except jwt.PyJWTError:
                raise AuthenticationError("invalid token") from None
            if header.get("alg") in self.oidc.algorithms:
                try:
                    claims = await self.oidc.verify(credential, header)
                except OidcError as error:
                    raise AuthenticationError(str(error)) from None
                return principal_from_claims(claims, self.settings)
        return authenticate(credential, self.settings)

    def _key_principal(self, record: KeyRecord) -> Principal:
        known = self._key_principals.get(record.id)
        if known is not None and known[0] is record:
            return known[1]
        principal = Principal(
            subject=f"key:{record.id}",
            tenant_id=record.tenant_id,
            roles=parse_roles(record.roles),
            method="api_key",
            rpm=record.rpm,
            tpm=record.tpm,
        )
        if len(self._key_principals) >= MAX_KEY_PRINCIPALS:
            self._key_principals.clear()
        self._key_principals[record.id] = (record, principal)
        return principal


def _roles(value: object) -> frozenset[Role]:
    """Roles from a list of names or an OAuth-style space-separated string; unknown ones drop."""
    if isinstance(value, str):
        names = value.split()
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        names = list(value)
    else:
        raise AuthenticationError("token roles claim must be a list of strings")
    return parse_roles(names)
