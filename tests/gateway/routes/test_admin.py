"""Admin API: API keys (create, list, show, revoke, limits), local users, tenant scoping."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.gateway.helpers import ADMIN, assert_problem, bearer, editor, token, user


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def _create(
    client: httpx.AsyncClient, headers: dict[str, str], **body: Any
) -> dict[str, Any]:
    response = await client.post("/v1/admin/keys", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_key_is_shown_once_works_and_revocation_is_immediate(
    client: httpx.AsyncClient,
) -> None:
    tenant = _tenant()
    created = await _create(client, ADMIN, tenant_id=tenant, roles=["user"], name="ci")
    key = created["key"]
    assert key.startswith(f"am_{created['prefix']}_")
    assert created["tenant_id"] == tenant

    assert (await client.get("/v1/models", headers=bearer(key))).status_code == 200

    listed = await client.get("/v1/admin/keys", params={"tenant_id": tenant}, headers=ADMIN)
    assert listed.status_code == 200
    [info] = listed.json()["keys"]
    assert info["id"] == created["id"]
    assert "key" not in info
    assert key not in listed.text
    assert info["last_used_at"] is not None

    revoked = await client.delete(f"/v1/admin/keys/{created['id']}", headers=ADMIN)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    body = assert_problem(await client.get("/v1/models", headers=bearer(key)), 401)
    assert "revoked" in body["detail"]


async def test_expired_key_is_refused(client: httpx.AsyncClient) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    created = await _create(client, ADMIN, tenant_id=_tenant(), roles=["user"], expires_at=past)
    assert_problem(await client.get("/v1/models", headers=bearer(created["key"])), 401)


async def test_tenant_admin_is_confined_to_its_tenant(client: httpx.AsyncClient) -> None:
    mine, theirs = _tenant(), _tenant()
    admin_key = (await _create(client, ADMIN, tenant_id=mine, roles=["admin"]))["key"]
    other = await _create(client, ADMIN, tenant_id=theirs, roles=["user"])
    tenant_admin = bearer(admin_key)

    own = await _create(client, tenant_admin, roles=["editor"])
    assert own["tenant_id"] == mine

    # Other tenants' keys do not exist for this admin: 404, not 403.
    assert_problem(await client.get(f"/v1/admin/keys/{other['id']}", headers=tenant_admin), 404)
    assert_problem(await client.delete(f"/v1/admin/keys/{other['id']}", headers=tenant_admin), 404)
    assert (await client.get("/v1/models", headers=bearer(other["key"]))).status_code == 200
    listed = await client.get("/v1/admin/keys", headers=tenant_admin)
    assert {k["tenant_id"] for k in listed.json()["keys"]} == {mine}

    # It cannot create keys elsewhere, list elsewhere, nor raise limits.
    response = await client.post(
        "/v1/admin/keys", json={"roles": ["user"], "tenant_id": theirs}, headers=tenant_admin
    )
    assert_problem(response, 403)
    response = await client.get(
        "/v1/admin/keys", params={"tenant_id": theirs}, headers=tenant_admin
    )
    assert_problem(response, 403)
    response = await client.post(
        "/v1/admin/keys", json={"roles": ["user"], "rpm": 100000}, headers=tenant_admin
    )
    assert_problem(response, 403)
    response = await client.put(
        f"/v1/admin/tenants/{theirs}/limits", json={"rpm": 5}, headers=tenant_admin
    )
    assert_problem(response, 404)


async def test_non_admins_are_refused(client: httpx.AsyncClient) -> None:
    for headers in (user(), editor()):
        assert_problem(await client.get("/v1/admin/keys", headers=headers), 403)
        response = await client.post("/v1/admin/keys", json={"roles": ["admin"]}, headers=headers)
        assert_problem(response, 403)
    assert_problem(await client.get("/v1/admin/keys"), 401)


async def test_operator_sets_key_and_tenant_limits(client: httpx.AsyncClient) -> None:
    tenant = _tenant()
    created = await _create(client, ADMIN, tenant_id=tenant, roles=["user"])
    response = await client.put(
        f"/v1/admin/keys/{created['id']}/limits", json={"rpm": 2, "tpm": 1000}, headers=ADMIN
    )
    assert response.status_code == 200
    assert (response.json()["rpm"], response.json()["tpm"]) == (2, 1000)
    response = await client.put(
        f"/v1/admin/tenants/{tenant}/limits", json={"rpm": 50}, headers=ADMIN
    )
    assert response.status_code == 204

    key = bearer(created["key"])
    first = await client.get("/v1/models", headers=key)
    assert first.headers["ratelimit-limit"] == "2"
    assert first.headers["ratelimit-remaining"] == "1"
    assert (await client.get("/v1/models", headers=key)).status_code == 200
    refused = await client.get("/v1/models", headers=key)
    assert_problem(refused, 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-remaining"] == "0"


async def test_bad_key_requests_are_422(client: httpx.AsyncClient) -> None:
    bodies: list[dict[str, Any]] = [
        {"roles": []},
        {"roles": ["root"]},
        {"roles": ["user"], "tenant_id": "../x"},
    ]
    for body in bodies:
        assert_problem(await client.post("/v1/admin/keys", json=body, headers=ADMIN), 422)
    assert_problem(await client.get("/v1/admin/keys/not-an-id", headers=ADMIN), 422)


async def test_local_user_login_and_refresh(client: httpx.AsyncClient) -> None:
    tenant = _tenant()
    admin_key = (await _create(client, ADMIN, tenant_id=tenant, roles=["admin"]))["key"]
    name = f"bob-{uuid.uuid4().hex[:6]}"
    response = await client.post(
        "/v1/admin/users",
        json={"username": name, "password": "a long enough password", "roles": ["editor"]},
        headers=bearer(admin_key),
    )
    assert response.status_code == 201, response.text
    assert response.json()["tenant_id"] == tenant
    again = await client.post(
        "/v1/admin/users",
        json={"username": name, "password": "a long enough password", "roles": ["user"]},
        headers=bearer(admin_key),
    )
    assert_problem(again, 409)

    wrong = await client.post(
        "/v1/auth/token", data={"grant_type": "password", "username": name, "password": "nope"}
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"

    login = await client.post(
        "/v1/auth/token",
        data={"grant_type": "password", "username": name, "password": "a long enough password"},
    )
    assert login.status_code == 200, login.text
    tokens = login.json()
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    assert login.headers["cache-control"] == "no-store"
    assert (
        await client.get("/v1/models", headers=bearer(tokens["access_token"]))
    ).status_code == 200
    # Editor, not admin.
    assert_problem(await client.get("/v1/admin/keys", headers=bearer(tokens["access_token"])), 403)

    refreshed = await client.post(
        "/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert refreshed.status_code == 200
    reused = await client.post(
        "/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert reused.json()["error"] == "invalid_grant"
    unsupported = await client.post("/v1/auth/token", data={"grant_type": "client_credentials"})
    assert unsupported.json()["error"] == "unsupported_grant_type"


async def test_token_endpoint_without_form_is_422(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/auth/token"), 422)


async def test_static_jwt_still_works(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/models", headers=bearer(token()))).status_code == 200
