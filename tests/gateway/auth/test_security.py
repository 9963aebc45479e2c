"""Credential resolution (unit) and every authentication/authorization outcome over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import jwt
import pytest

from aimesh_gateway.auth.security import (
    AuthenticationError,
    Principal,
    Role,
    authenticate,
)
from aimesh_gateway.core.config import Settings
from tests.conftest import make_jwt
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import (
    ADMIN,
    ADMIN_KEY,
    JWT_SECRET,
    TENANT,
    assert_problem,
    bearer,
    editor,
    token,
    unsigned_jwt,
    user,
    valid_claims,
)

SETTINGS = Settings(admin_api_key=ADMIN_KEY, jwt_secret=JWT_SECRET, admin_tenant="root")


def test_admin_key_is_admin_of_the_admin_tenant() -> None:
    principal = authenticate(ADMIN_KEY, SETTINGS)
    assert principal == Principal("admin-api-key", "root", frozenset({Role.ADMIN}), "api_key")
    assert principal.has_role(Role.USER)
    assert principal.has_role(Role.EDITOR)


def test_jwt_gives_tenant_and_roles_from_claims() -> None:
    principal = authenticate(token("tenant-7", ["editor"], subject="alice"), SETTINGS)
    assert (principal.subject, principal.tenant_id, principal.method) == (
        "alice",
        "tenant-7",
        "jwt",
    )
    assert principal.roles == frozenset({Role.EDITOR})
    assert principal.has_role(Role.USER)
    assert principal.has_role(Role.EDITOR)
    assert not principal.has_role(Role.ADMIN)


def test_previous_secret_is_accepted_during_rotation() -> None:
    new_secret = "n" * 48
    old_token = token("tenant-7", ["user"])  # signed with JWT_SECRET, now the old one
    rotating = Settings(jwt_secret=new_secret, jwt_previous_secret=JWT_SECRET)
    assert authenticate(old_token, rotating).tenant_id == "tenant-7"
    fresh = make_jwt(new_secret, tenant="tenant-8")
    assert authenticate(fresh, rotating).tenant_id == "tenant-8"
    rotated = Settings(jwt_secret=new_secret)
    with pytest.raises(AuthenticationError):
        authenticate(old_token, rotated)
    with pytest.raises(AuthenticationError):
        authenticate(make_jwt("x" * 48, tenant="t"), rotating)


def test_roles_default_to_user_and_unknown_ones_are_dropped() -> None:
    assert authenticate(token(roles=None), SETTINGS).roles == frozenset({Role.USER})
    assert authenticate(token(roles=["viewer", "editor"]), SETTINGS).roles == {Role.EDITOR}
    nothing = authenticate(token(roles=["viewer"]), SETTINGS)
    assert not nothing.has_role(Role.USER)


def test_roles_may_be_a_space_separated_string() -> None:
    claims = valid_claims(roles="user editor")
    principal = authenticate(jwt.encode(claims, JWT_SECRET, algorithm="HS256"), SETTINGS)
    assert principal.roles == {Role.USER, Role.EDITOR}


def test_configured_claim_names_and_audience_are_used() -> None:
    settings = Settings(
        jwt_secret=JWT_SECRET,
        jwt_audience="portal",
        jwt_tenant_claim="org",
        jwt_roles_claim="perms",
    )
    now = int(time.time())
    claims = {
        "sub": "s",
        "aud": "portal",
        "iss": "aimesh-gateway",
        "exp": now + 60,
        "org": "org-1",
        "perms": ["admin"],
    }
    principal = authenticate(jwt.encode(claims, JWT_SECRET, algorithm="HS256"), settings)
    assert (principal.tenant_id, principal.roles) == ("org-1", frozenset({Role.ADMIN}))
    with pytest.raises(AuthenticationError):
        authenticate(token(), settings)  # aud "aimesh", tenant in tenant_id: both wrong here


def test_hs256_issuers_are_the_gateway_and_the_configured_ones() -> None:
    settings = Settings(jwt_secret=JWT_SECRET, jwt_issuers=["https://idp.example"])
    for issuer in ("aimesh-gateway", "https://idp.example"):
        claims = valid_claims(iss=issuer)
        assert authenticate(jwt.encode(claims, JWT_SECRET, algorithm="HS256"), settings)
    forged = jwt.encode(valid_claims(iss="https://evil.example"), JWT_SECRET, algorithm="HS256")
    with pytest.raises(AuthenticationError, match="token issuer not accepted"):
        authenticate(forged, settings)
    with pytest.raises(AuthenticationError, match="token issuer not accepted"):
        authenticate(
            jwt.encode(valid_claims(iss="https://idp.example"), JWT_SECRET), SETTINGS
        )  # not configured here


def _forged(alg: str) -> str:
    return jwt.encode(valid_claims(), JWT_SECRET, algorithm=alg)


@pytest.mark.parametrize(
    ("make_credential", "reason"),
    [
        (lambda: "", "missing"),
        (lambda: "am_test_admin_key_0123456789abcdeX", "invalid credential"),
        (lambda: ADMIN_KEY[:-1], "invalid credential"),
        (lambda: token(expires_in=-60), "expired"),
        (lambda: token(audience="someone-else"), "audience"),
        (lambda: token(issuer="https://evil.example"), "issuer"),
        (
            lambda: jwt.encode({k: v for k, v in valid_claims().items() if k != "iss"}, JWT_SECRET),
            "iss",
        ),
        (
            lambda: make_jwt("another-secret-that-is-also-long-enough!!", tenant=TENANT),
            "invalid token",
        ),
        (lambda: unsigned_jwt({"alg": "none", "typ": "JWT"}, valid_claims()), "invalid token"),
        (lambda: unsigned_jwt({"alg": "None", "typ": "JWT"}, valid_claims()), "invalid token"),
        (lambda: _forged("HS512"), "invalid token"),
        (lambda: _forged("HS384"), "invalid token"),
        (lambda: token(tenant=None), "tenant"),
        (lambda: token(tenant=""), "tenant"),
        (lambda: token(tenant="../other"), "tenant"),
        (lambda: jwt.encode({**valid_claims(), "exp": None}, JWT_SECRET), "exp"),
        (
            lambda: jwt.encode({k: v for k, v in valid_claims().items() if k != "exp"}, JWT_SECRET),
            "exp",
        ),
        (
            lambda: jwt.encode({k: v for k, v in valid_claims().items() if k != "sub"}, JWT_SECRET),
            "sub",
        ),
        (
            lambda: jwt.encode({k: v for k, v in valid_claims().items() if k != "aud"}, JWT_SECRET),
            "aud",
        ),
        (lambda: jwt.encode(valid_claims(roles={"admin": True}), JWT_SECRET), "roles"),
        (lambda: jwt.encode(valid_claims(nbf=int(time.time()) + 600), JWT_SECRET), "not yet valid"),
        (lambda: "not.a.jwt", "invalid token"),
    ],
)
def test_bad_credentials_are_rejected(make_credential: Callable[[], str], reason: str) -> None:
    # Made when the test runs: tokens made at collection time could expire in a long run.
    with pytest.raises(AuthenticationError) as caught:
        authenticate(make_credential(), SETTINGS)
    assert reason in caught.value.message


def test_nothing_is_accepted_when_no_key_or_secret_is_configured() -> None:
    bare = Settings()
    for credential in (ADMIN_KEY, token()):
        with pytest.raises(AuthenticationError):
            authenticate(credential, bare)


def test_jwt_is_not_accepted_as_admin_key_without_secret() -> None:
    with pytest.raises(AuthenticationError):
        authenticate(token(), Settings(admin_api_key=ADMIN_KEY))


SEARCH = "/v1/collections/docs/search"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {ADMIN_KEY}"},
        {"Authorization": ADMIN_KEY},
        bearer("wrong-key-0123456789"),
        bearer(token(expires_in=-60)),
        bearer(token(audience="someone-else")),
        bearer(make_jwt("another-secret-that-is-also-long-enough!!", tenant=TENANT)),
        bearer(unsigned_jwt({"alg": "none", "typ": "JWT"}, valid_claims())),
        bearer(token(tenant=None)),
    ],
    ids=[
        "no header",
        "empty bearer",
        "basic scheme",
        "no scheme",
        "bad key",
        "expired jwt",
        "wrong audience",
        "wrong signature",
        "alg none",
        "missing tenant claim",
    ],
)
async def test_auth_failures_are_401_problems(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post(SEARCH, json={"query": "q"}, headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    # Nothing of the credential comes back.
    credential = headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if len(credential) > 8:
        assert credential not in response.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/models", None),
        ("GET", "/v1/collections/docs/documents", None),
        ("DELETE", "/v1/collections/docs/documents/a", None),
        ("POST", "/v1/collections/docs/documents", {"documents": [{"id": "a", "text": "t"}]}),
        ("POST", "/v1/ask", {"question": "q", "collection": "docs"}),
        ("POST", "/v1/summarize", {"text": "t"}),
        ("POST", "/v1/chat/completions", {"model": "default", "messages": []}),
    ],
)
async def test_every_v1_route_needs_a_credential(
    client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    response = await client.request(method, path, json=body)
    assert_problem(response, 401)


async def test_probes_need_no_credential(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path


async def test_user_role_cannot_write_documents(client: httpx.AsyncClient) -> None:
    body = {"documents": [{"id": "a", "text": "some text"}]}
    for headers in (user(), bearer(token(roles=["viewer"]))):
        response = await client.post("/v1/collections/docs/documents", json=body, headers=headers)
        problem = assert_problem(response, 403)
        assert "editor" in problem["detail"]
        deleted = await client.delete("/v1/collections/docs/documents/a", headers=headers)
        assert_problem(deleted, 403)


async def test_principal_without_a_known_role_cannot_read(client: httpx.AsyncClient) -> None:
    response = await client.post(
        SEARCH, json={"query": "q"}, headers=bearer(token(roles=["viewer"]))
    )
    assert_problem(response, 403)


async def test_editor_and_admin_may_write(client: httpx.AsyncClient) -> None:
    body = {"documents": [{"id": "a", "text": "some text"}]}
    for headers in (editor(), bearer(token(roles=["admin"])), ADMIN):
        response = await client.post("/v1/collections/roles/documents", json=body, headers=headers)
        assert response.status_code == 200, response.text


async def test_tenant_comes_from_the_token(client: httpx.AsyncClient, fake_mesh: FakeMesh) -> None:
    await client.post(
        "/v1/collections/tenancy/documents",
        json={"documents": [{"id": "a", "text": "alpha"}]},
        headers=editor("tenant-from-token"),
    )
    assert fake_mesh.retrieval.recorder.last("UpsertDocuments").tenant_id == "tenant-from-token"
    await client.get("/v1/collections/tenancy/documents", headers=ADMIN)
    assert fake_mesh.retrieval.recorder.last("ListDocuments").tenant_id == "default"


async def test_tenant_in_the_body_is_ignored(
    client: httpx.AsyncClient, fake_mesh: FakeMesh
) -> None:
    # Native requests reject unknown fields, so a tenant in the body is a 422, never honoured.
    response = await client.post(
        "/v1/ask",
        json={"question": "q", "collection": "docs", "tenant_id": "victim"},
        headers=user(),
    )
    assert_problem(response, 422)
    # The OpenAI route refuses arguments OpenAI does not know either (400, as OpenAI does),
    # before any backend call; the tenant always comes from the token.
    calls = len(fake_mesh.router.recorder.calls)
    response = await client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "tenant_id": "victim"},
        headers=user("tenant-x"),
    )
    assert "tenant_id" in assert_problem(response, 400)["detail"]
    assert len(fake_mesh.router.recorder.calls) == calls
    response = await client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers=user("tenant-x"),
    )
    assert response.status_code == 200, response.text
    assert fake_mesh.router.recorder.last("Generate").tenant_id == "tenant-x"


async def test_tenants_do_not_see_each_other(client: httpx.AsyncClient) -> None:
    secret = {"documents": [{"id": "plan", "text": "the code word is bluebird"}]}
    stored = await client.post(
        "/v1/collections/private/documents", json=secret, headers=editor("a")
    )
    assert stored.status_code == 200
    query = {"query": "code word"}
    for response in (
        await client.post("/v1/collections/private/search", json=query, headers=user("b")),
        await client.get("/v1/collections/private/documents", headers=user("b")),
        await client.delete("/v1/collections/private/documents/plan", headers=editor("b")),
        await client.post(
            "/v1/ask", json={"question": "code word?", "collection": "private"}, headers=user("b")
        ),
    ):
        assert_problem(response, 404)
    own = await client.post("/v1/collections/private/search", json=query, headers=user("a"))
    assert "bluebird" in own.json()["results"][0]["text"]


def test_key_principals_are_reused_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 28: the principal of each verified key is cached, but never more than the cap."""
    from datetime import UTC, datetime

    import aimesh_gateway.auth.security as security
    from aimesh_gateway.auth.keys import KeyRecord, KeyStore

    monkeypatch.setattr(security, "MAX_KEY_PRINCIPALS", 5)
    # API keys are verified elsewhere; a store on no database is never called here.
    authenticator = security.Authenticator(Settings(), KeyStore(None), None)  # type: ignore[arg-type]

    def record(index: int) -> KeyRecord:
        return KeyRecord(
            f"id{index}",
            f"p{index}",
            "acme",
            "",
            ("editor",),
            datetime.now(UTC),
            None,
            None,
            None,
            None,
            None,
        )

    first = record(0)
    principal = authenticator._key_principal(first)
    assert principal.tenant_id == "acme"
    assert authenticator._key_principal(first) is principal  # the same record: reused
    for index in range(1, 12):
        authenticator._key_principal(record(index))
    assert len(authenticator._key_principals) <= 5
    assert authenticator._key_principal(first) is not principal  # rebuilt after the cap
