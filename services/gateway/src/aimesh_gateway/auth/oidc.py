"""Verification of RS256/ES256 JWTs from an OIDC issuer.

The issuer's discovery document names its JWKS; keys are cached by ``kid`` for
``oidc_jwks_cache_seconds``. A token whose ``kid`` is not cached triggers one refetch (at most
every ``MIN_REFETCH_SECONDS``, so a flood of forged kids cannot hammer the issuer): that is how
a rotated key is picked up without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import jwt
from jwt import PyJWK

log = logging.getLogger("aimesh.gateway.oidc")

MIN_REFETCH_SECONDS = 10.0


class OidcError(Exception):
    """The token is not acceptable; the message is safe to show."""


class OidcVerifier:
    def __init__(
        self,
        issuer: str,
        audience: str,
        algorithms: list[str],
        cache_seconds: float,
        leeway_seconds: int,
        http: httpx.AsyncClient | None = None,
        min_refetch_seconds: float = MIN_REFETCH_SECONDS,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.algorithms = algorithms
        self.cache_seconds = cache_seconds
        self.leeway = leeway_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self._http = http or httpx.AsyncClient(timeout=5.0)
        self._keys: dict[str, PyJWK] = {}
        self._declared_alg: dict[str, str | None] = {}
        self._fetched_at = -float("inf")
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self._http.aclose()

    async def _fetch(self) -> None:
        discovery_url = f"{self.issuer}/.well-known/openid-configuration"
        discovery = (await self._http.get(discovery_url)).raise_for_status().json()
        if discovery.get("issuer", "").rstrip("/") != self.issuer:
            raise OidcError("the OIDC discovery document names another issuer")
        jwks = (await self._http.get(discovery["jwks_uri"])).raise_for_status().json()
        keys: dict[str, PyJWK] = {}
        declared: dict[str, str | None] = {}
        for entry in jwks.get("keys", []):
            if entry.get("use", "sig") != "sig" or "kid" not in entry:
                continue
            try:
                keys[entry["kid"]] = PyJWK(entry)
                declared[entry["kid"]] = entry.get("alg")
            except jwt.PyJWTError:
                log.warning("skipping an unusable JWKS key", extra={"kid": entry.get("kid")})
        self._keys, self._declared_alg = keys, declared
        self._fetched_at = time.monotonic()

    async def _key(self, kid: str) -> PyJWK:
        age = time.monotonic() - self._fetched_at
        if kid in self._keys and age < self.cache_seconds:
            return self._keys[kid]
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            stale = age >= self.cache_seconds
            if stale or (kid not in self._keys and age >= self.min_refetch_seconds):
                try:
                    await self._fetch()
                except (httpx.HTTPError, ValueError, KeyError) as error:
                    log.warning("cannot fetch the OIDC signing keys: %s", type(error).__name__)
                    if kid not in self._keys:
                        raise OidcError("the issuer's signing keys are unavailable") from None
        key = self._keys.get(kid)
        if key is None:
            raise OidcError("token signed with an unknown key")
        return key

    async def verify(self, token: str, header: dict[str, Any]) -> dict[str, Any]:
        alg = header.get("alg")
        kid = header.get("kid")
        if alg not in self.algorithms:
            raise OidcError("token algorithm not accepted")
        if not isinstance(kid, str):
            raise OidcError("token lacks a key id")
        key = await self._key(kid)
        declared = self._declared_alg.get(kid)
        if declared is not None and declared != alg:
            raise OidcError("token algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["sub", "exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise OidcError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise OidcError("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise OidcError("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise OidcError("token issuer not accepted") from None
        except jwt.MissingRequiredClaimError as error:
            raise OidcError(f"token lacks the required claim {error.claim!r}") from None
        except jwt.PyJWTError:
            raise OidcError("invalid token") from None
        return claims
