"""OIDC JWTs (RS256/ES256) verified against a real local issuer serving discovery and JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from aimesh_gateway.auth.keys import KeyStore
from aimesh_gateway.auth.oidc import OidcVerifier
from aimesh_gateway.auth.security import AuthenticationError, Authenticator, Role
from aimesh_gateway.core.config import Settings
from aimesh_gateway.main import create_app
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import bearer, running, unsigned_jwt

AUDIENCE = "aimesh-api"


@dataclass
class Issuer:
    url: str
    jwks: dict[str, Any]
    fetches: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    state = Issuer(url="", jwks={"keys": []})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.fetches.append(self.path)
            if self.path == "/.well-known/openid-configuration":
                body: dict[str, Any] = {"issuer": state.url, "jwks_uri": f"{state.url}/jwks"}
            elif self.path == "/jwks":
                body = state.jwks
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    public = key.public_key()
    algorithm = RSAAlgorithm if alg.startswith("RS") else ECAlgorithm
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(public))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def _claims(issuer: Issuer, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": issuer.url,
        "aud": AUDIENCE,
        "sub": "oidc-user",
        "iat": now,
        "exp": now + 300,
        "org": "acme",
        "groups": ["editor"],
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(
    claims: dict[str, Any], key: Any = RSA_KEY, kid: str = "rsa-1", alg: str = "RS256"
) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def _settings(issuer: Issuer) -> Settings:
    return Settings(
        oidc_issuer=issuer.url,
        oidc_audience=AUDIENCE,
        jwt_tenant_claim="org",
        jwt_roles_claim="groups",
        oidc_leeway_seconds=0,
    )


@pytest.fixture
def authenticator(issuer: Issuer) -> Authenticator:
    issuer.jwks = {"keys": [_jwk(RSA_KEY, "rsa-1", "RS256"), _jwk(EC_KEY, "ec-1", "ES256")]}
    issuer.fetches.clear()
    settings = _settings(issuer)
    verifier = OidcVerifier(issuer.url, AUDIENCE, ["RS256", "ES256"], 300, 0, min_refetch_seconds=0)
    # API keys are not exercised here; a store on no database is never called.
    return Authenticator(settings, KeyStore(None), verifier)  # type: ignore[arg-type]


async def test_rs256_and_es256_tokens_with_configured_claim_names(
    issuer: Issuer, authenticator: Authenticator
) -> None:
    principal = await authenticator.authenticate(_sign(_claims(issuer)))
    assert (principal.subject, principal.tenant_id, principal.roles) == (
        "oidc-user",
        "acme",
        frozenset({Role.EDITOR}),
    )
    es = await authenticator.authenticate(_sign(_claims(issuer), EC_KEY, "ec-1", "ES256"))
    assert es.tenant_id == "acme"
    # Discovery and JWKS were fetched once and then cached.
    assert issuer.fetches == ["/.well-known/openid-configuration", "/jwks"]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda i: _sign(_claims(i, iss="https://evil.example")), "issuer"),
        (lambda i: _sign(_claims(i, aud="someone-else")), "audience"),
        (lambda i: _sign(_claims(i, exp=int(time.time()) - 5)), "expired"),
        (lambda i: _sign(_claims(i, nbf=int(time.time()) + 600)), "not yet valid"),
        (lambda i: _sign(_claims(i, sub=None)), "sub"),
        (lambda i: _sign(_claims(i, org=None)), "tenant"),
        (lambda i: _sign(_claims(i), kid="unknown"), "unknown key"),
        (lambda i: _sign(_claims(i), kid="ec-1"), "algorithm"),
        (lambda i: _sign(_claims(i), RSA_KEY_2, "rsa-1"), "invalid token"),
        (lambda i: unsigned_jwt({"alg": "none", "kid": "rsa-1"}, _claims(i)), "invalid"),
    ],
)
async def test_attacks_are_rejected(
    issuer: Issuer, authenticator: Authenticator, make: Any, reason: str
) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await authenticator.authenticate(make(issuer))
    assert reason in caught.value.message


async def test_tampered_payload_is_rejected(issuer: Issuer, authenticator: Authenticator) -> None:
    header, _, signature = _sign(_claims(issuer)).split(".")
    forged = _sign(_claims(issuer, org="other-tenant", groups=["admin"])).split(".")[1]
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(f"{header}.{forged}.{signature}")


async def test_hs_rs_confusion_is_rejected(issuer: Issuer, authenticator: Authenticator) -> None:
    """An HS256 token "signed" with the issuer's public key must not verify."""
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        f"{b64(json.dumps(header).encode())}.{b64(json.dumps(_claims(issuer)).encode())}"
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(f"{signing_input}.{b64(signature)}")


async def test_rotated_key_is_picked_up_by_kid(
    issuer: Issuer, authenticator: Authenticator
) -> None:
    await authenticator.authenticate(_sign(_claims(issuer)))
    issuer.jwks = {"keys": [_jwk(RSA_KEY_2, "rsa-2", "RS256")]}
    principal = await authenticator.authenticate(_sign(_claims(issuer), RSA_KEY_2, "rsa-2"))
    assert principal.tenant_id == "acme"
    assert issuer.fetches.count("/jwks") == 2
    # The retired key is gone after the refetch.
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(_sign(_claims(issuer), RSA_KEY, "rsa-1"))


async def test_gateway_accepts_oidc_tokens_end_to_end(issuer: Issuer, fake_mesh: FakeMesh) -> None:
    issuer.jwks = {"keys": [_jwk(RSA_KEY, "rsa-1", "RS256")]}
    app = create_app(
        fake_mesh.settings(
            oidc_issuer=issuer.url,
            oidc_audience=AUDIENCE,
            jwt_tenant_claim="org",
            jwt_roles_claim="groups",
        )
    )
    async with running(app) as client:
        ok = await client.get("/v1/models", headers=bearer(_sign(_claims(issuer))))
        assert ok.status_code == 200
        expired = _sign(_claims(issuer, exp=int(time.time()) - 120))
        assert (await client.get("/v1/models", headers=bearer(expired))).status_code == 401
