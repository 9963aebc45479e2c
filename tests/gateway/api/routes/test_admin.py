"""Admin API: API keys (create, list, show, revoke, limits), local users, tenant scoping."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.gateway.conftest import on_each_database
from tests.gateway.helpers import ADMIN, TENANT, assert_problem, bearer, editor, token, user

# The routes keep state: every test runs on SQLite and on the real PostgreSQL.
app, client = on_each_database()


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def _create(
    client: httpx.AsyncClient, headers: dict[str, str], **body: Any
) -> dict[str, Any]:
    response = await client.post("/v1/admin/keys", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


PASSWORD = "a long enough password"


async def _create_user(
    client: httpx.AsyncClient, headers: dict[str, str], roles: list[str]
) -> dict[str, Any]:
    """A new local user of the caller's tenant (password :data:`PASSWORD`)."""
    name = f"u-{uuid.uuid4().hex[:10]}"
    response = await client.post(
        "/v1/admin/users",
        json={"username": name, "password": PASSWORD, "roles": roles},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _login(client: httpx.AsyncClient, username: str) -> httpx.Response:
    return await client.post(
        "/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": PASSWORD},
    )


async def _tokens(client: httpx.AsyncClient, username: str) -> dict[str, Any]:
    response = await _login(client, username)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def _refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post(
        "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def _assert_invalid_grant(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


async def _tenant_admin(client: httpx.AsyncClient, tenant: str) -> dict[str, str]:
    """Headers of a new admin API key of ``tenant``."""
    return bearer((await _create(client, ADMIN, tenant_id=tenant, roles=["admin"]))["key"])


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

    # Nor do other tenants: it cannot create keys there, list them, nor set their limits.
    for body in ({"roles": ["user"], "tenant_id": theirs}, {"roles": ["user"], "tenant_id": "x"}):
        response = await client.post("/v1/admin/keys", json=body, headers=tenant_admin)
        assert assert_problem(response, 404)["detail"] == f"tenant {body['tenant_id']!r} not found"
    response = await client.post(
        "/v1/admin/keys",
        json={"roles": ["user"], "tenant_id": theirs, "rpm": 5},
        headers=tenant_admin,
    )
    assert_problem(response, 404)
    for tenant in (theirs, "x"):
        response = await client.get(
            "/v1/admin/keys", params={"tenant_id": tenant}, headers=tenant_admin
        )
        assert assert_problem(response, 404)["detail"] == f"tenant {tenant!r} not found"
        response = await client.put(
            f"/v1/admin/tenants/{tenant}/limits", json={"rpm": 5}, headers=tenant_admin
        )
        assert_problem(response, 404)
    listed = await client.get("/v1/admin/keys", params={"tenant_id": theirs}, headers=ADMIN)
    assert [k["id"] for k in listed.json()["keys"]] == [other["id"]]
    # Naming its own tenant is the same as naming none.
    response = await client.get("/v1/admin/keys", params={"tenant_id": mine}, headers=tenant_admin)
    assert response.status_code == 200

    # Its own tenant's limits are the operator's to set: that is a role matter (403).
    response = await client.post(
        "/v1/admin/keys", json={"roles": ["user"], "rpm": 100000}, headers=tenant_admin
    )
    assert_problem(response, 403)
    response = await client.put(
        f"/v1/admin/tenants/{mine}/limits", json={"rpm": 5}, headers=tenant_admin
    )
    assert_problem(response, 403)


async def test_non_admins_are_refused(client: httpx.AsyncClient) -> None:
    # A real user of the callers' tenant: only the role stands in the way.
    created = await _create_user(client, await _tenant_admin(client, TENANT), ["user"])
    for headers in (user(), editor()):
        assert_problem(await client.get("/v1/admin/keys", headers=headers), 403)
        response = await client.post("/v1/admin/keys", json={"roles": ["admin"]}, headers=headers)
        assert_problem(response, 403)
        assert_problem(await client.get("/v1/admin/users", headers=headers), 403)
        url = f"/v1/admin/users/{created['id']}"
        assert_problem(await client.patch(url, json={"roles": ["admin"]}, headers=headers), 403)
        assert_problem(await client.delete(url, headers=headers), 403)
    assert_problem(await client.get("/v1/admin/keys"), 401)
    assert_problem(await client.get("/v1/admin/users"), 401)
    url = f"/v1/admin/users/{created['username']}"
    assert_problem(await client.patch(url, json={"disabled": True}), 401)
    assert_problem(await client.delete(url), 401)
    listed = await client.get("/v1/admin/users", params={"tenant_id": TENANT}, headers=ADMIN)
    [still] = [u for u in listed.json()["users"] if u["id"] == created["id"]]
    assert still["roles"] == ["user"]
    assert still["disabled_at"] is None


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


async def test_admin_lists_changes_and_deletes_the_users_of_its_tenant(
    client: httpx.AsyncClient,
) -> None:
    tenant = _tenant()
    admin = await _tenant_admin(client, tenant)
    alice = await _create_user(client, admin, ["editor"])
    bob = await _create_user(client, admin, ["user"])
    assert alice["tenant_id"] == tenant
    assert alice["disabled_at"] is None
    assert datetime.fromisoformat(alice["created_at"]) <= datetime.now(UTC)

    listed = await client.get("/v1/admin/users", headers=admin)
    assert listed.status_code == 200, listed.text
    users = listed.json()["users"]
    assert users == [alice, bob]  # oldest first, the same shape as the created user
    assert PASSWORD not in listed.text
    assert "argon2" not in listed.text
    assert all(
        set(u) == {"id", "username", "tenant_id", "roles", "created_at", "disabled_at"}
        for u in users
    )

    # By username or by id.
    changed = await client.patch(
        f"/v1/admin/users/{alice['username']}", json={"roles": ["user", "editor"]}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {**alice, "roles": ["editor", "user"]}
    changed = await client.patch(
        f"/v1/admin/users/{alice['id']}", json={"roles": ["user"]}, headers=admin
    )
    assert changed.json()["roles"] == ["user"]

    tokens = await _tokens(client, bob["username"])
    deleted = await client.delete(f"/v1/admin/users/{bob['username']}", headers=admin)
    assert deleted.status_code == 204
    assert deleted.content == b""
    listed = await client.get("/v1/admin/users", headers=admin)
    assert [u["id"] for u in listed.json()["users"]] == [alice["id"]]
    _assert_invalid_grant(await _login(client, bob["username"]))
    _assert_invalid_grant(await _refresh(client, tokens["refresh_token"]))
    assert_problem(await client.delete(f"/v1/admin/users/{bob['id']}", headers=admin), 404)
    response = await client.patch(
        f"/v1/admin/users/{bob['id']}", json={"disabled": True}, headers=admin
    )
    assert_problem(response, 404)

    # The name is free again.
    response = await client.post(
        "/v1/admin/users",
        json={"username": bob["username"], "password": PASSWORD, "roles": ["user"]},
        headers=admin,
    )
    assert response.status_code == 201
    assert response.json()["id"] != bob["id"]


async def test_a_role_change_holds_from_the_next_login_or_refresh(
    client: httpx.AsyncClient,
) -> None:
    admin = await _tenant_admin(client, _tenant())
    carol = await _create_user(client, admin, ["user"])
    before = await _tokens(client, carol["username"])
    as_user = bearer(before["access_token"])
    assert_problem(await client.get("/v1/admin/users", headers=as_user), 403)

    response = await client.patch(
        f"/v1/admin/users/{carol['id']}", json={"roles": ["admin"]}, headers=admin
    )
    assert response.status_code == 200
    # The access token already issued keeps its roles until it expires...
    assert_problem(await client.get("/v1/admin/users", headers=as_user), 403)
    # ...a new login, or a refresh, carries the new ones.
    after = await _tokens(client, carol["username"])
    assert (
        await client.get("/v1/admin/users", headers=bearer(after["access_token"]))
    ).status_code == 200
    refreshed = await _refresh(client, before["refresh_token"])
    assert refreshed.status_code == 200
    refreshed_access = bearer(refreshed.json()["access_token"])
    assert (await client.get("/v1/admin/users", headers=refreshed_access)).status_code == 200

    response = await client.patch(
        f"/v1/admin/users/{carol['id']}", json={"roles": ["user"]}, headers=admin
    )
    assert response.status_code == 200
    demoted = await _refresh(client, refreshed.json()["refresh_token"])
    demoted_access = bearer(demoted.json()["access_token"])
    assert_problem(await client.get("/v1/admin/users", headers=demoted_access), 403)


async def test_a_disabled_user_can_neither_log_in_nor_refresh(client: httpx.AsyncClient) -> None:
    admin = await _tenant_admin(client, _tenant())
    dave = await _create_user(client, admin, ["user"])
    first = await _tokens(client, dave["username"])
    second = await _tokens(client, dave["username"])

    response = await client.patch(
        f"/v1/admin/users/{dave['username']}", json={"disabled": True}, headers=admin
    )
    assert response.status_code == 200, response.text
    disabled_at = response.json()["disabled_at"]
    assert disabled_at is not None
    assert response.json()["roles"] == ["user"]
    _assert_invalid_grant(await _login(client, dave["username"]))
    _assert_invalid_grant(await _refresh(client, first["refresh_token"]))
    listed = await client.get("/v1/admin/users", headers=admin)
    assert [u["disabled_at"] for u in listed.json()["users"]] == [disabled_at]

    # Disabling again keeps the first time; enabling lets the user log in again, but the
    # refresh tokens revoked on disabling stay revoked.
    again = await client.patch(
        f"/v1/admin/users/{dave['id']}", json={"disabled": True}, headers=admin
    )
    assert again.json()["disabled_at"] == disabled_at
    enabled = await client.patch(
        f"/v1/admin/users/{dave['id']}", json={"disabled": False}, headers=admin
    )
    assert enabled.status_code == 200
    assert enabled.json()["disabled_at"] is None
    _assert_invalid_grant(await _refresh(client, second["refresh_token"]))
    fresh = await _tokens(client, dave["username"])
    assert (await _refresh(client, fresh["refresh_token"])).status_code == 200

    # Both changes at once.
    both = await client.patch(
        f"/v1/admin/users/{dave['id']}",
        json={"roles": ["editor"], "disabled": True},
        headers=admin,
    )
    assert (both.json()["roles"], both.json()["disabled_at"] is not None) == (["editor"], True)
    _assert_invalid_grant(await _login(client, dave["username"]))


async def test_users_of_other_tenants_do_not_exist_for_a_tenant_admin(
    client: httpx.AsyncClient,
) -> None:
    mine, theirs = _tenant(), _tenant()
    admin = await _tenant_admin(client, mine)
    their_admin = await _tenant_admin(client, theirs)
    own = await _create_user(client, admin, ["user"])
    other = await _create_user(client, their_admin, ["editor"])

    listed = await client.get("/v1/admin/users", headers=admin)
    assert [u["id"] for u in listed.json()["users"]] == [own["id"]]
    response = await client.get("/v1/admin/users", params={"tenant_id": theirs}, headers=admin)
    assert assert_problem(response, 404)["detail"] == f"tenant {theirs!r} not found"
    for reference in (other["id"], other["username"]):
        url = f"/v1/admin/users/{reference}"
        body = assert_problem(await client.patch(url, json={"disabled": True}, headers=admin), 404)
        assert body["detail"] == "no such user"
        body = assert_problem(await client.delete(url, headers=admin), 404)
        assert body["detail"] == "no such user"
    # Exactly what an unknown user answers.
    unknown = await client.delete(f"/v1/admin/users/nobody-{uuid.uuid4().hex}", headers=admin)
    assert assert_problem(unknown, 404)["detail"] == "no such user"

    # Untouched: the other tenant's user still logs in with its roles.
    tokens = await _tokens(client, other["username"])
    listed = await client.get("/v1/admin/users", headers=their_admin)
    assert listed.json()["users"] == [other]
    assert tokens["access_token"]

    # The operator, like for keys, reaches every tenant.
    listed = await client.get("/v1/admin/users", params={"tenant_id": theirs}, headers=ADMIN)
    assert listed.json()["users"] == [other]
    response = await client.patch(
        f"/v1/admin/users/{other['username']}", json={"roles": ["user"]}, headers=ADMIN
    )
    assert response.status_code == 200
    assert (response.json()["tenant_id"], response.json()["roles"]) == (theirs, ["user"])
    assert (await client.delete(f"/v1/admin/users/{other['id']}", headers=ADMIN)).status_code == 204
    assert (await client.get("/v1/admin/users", headers=their_admin)).json()["users"] == []


async def test_an_admin_cannot_lock_out_its_own_user(client: httpx.AsyncClient) -> None:
    admin = await _tenant_admin(client, _tenant())
    erin = await _create_user(client, admin, ["admin"])
    as_erin = bearer((await _tokens(client, erin["username"]))["access_token"])
    url = f"/v1/admin/users/{erin['username']}"

    for body in ({"disabled": True}, {"roles": ["editor", "user"]}):
        assert_problem(await client.patch(url, json=body, headers=as_erin), 409)
    assert_problem(await client.delete(url, headers=as_erin), 409)
    listed = await client.get("/v1/admin/users", headers=as_erin)
    assert listed.json()["users"] == [erin]

    # Harmless changes of its own user pass; another admin may do the rest.
    response = await client.patch(
        url, json={"roles": ["admin", "editor"], "disabled": False}, headers=as_erin
    )
    assert response.status_code == 200
    assert response.json()["roles"] == ["admin", "editor"]
    frank = await _create_user(client, as_erin, ["user"])
    response = await client.patch(
        f"/v1/admin/users/{frank['id']}", json={"disabled": True}, headers=as_erin
    )
    assert response.status_code == 200
    assert (await client.patch(url, json={"disabled": True}, headers=admin)).status_code == 200
    _assert_invalid_grant(await _login(client, erin["username"]))


async def test_bad_user_requests_are_422(client: httpx.AsyncClient) -> None:
    created = await _create_user(client, ADMIN, ["user"])
    url = f"/v1/admin/users/{created['id']}"
    bodies: list[dict[str, Any]] = [
        {},
        {"roles": None, "disabled": None},
        {"roles": []},
        {"roles": ["root"]},
        {"disabled": "maybe"},
        {"password": "a new long password"},
        {"tenant_id": "elsewhere"},
    ]
    for body in bodies:
        assert_problem(await client.patch(url, json=body, headers=ADMIN), 422)
    assert_problem(await client.delete("/v1/admin/users/a%20b", headers=ADMIN), 422)
    assert_problem(await client.delete(f"/v1/admin/users/{'x' * 129}", headers=ADMIN), 422)
    response = await client.get("/v1/admin/users", params={"tenant_id": "../x"}, headers=ADMIN)
    assert_problem(response, 422)
    listed = await client.get("/v1/admin/users", headers=ADMIN)
    [unchanged] = [u for u in listed.json()["users"] if u["id"] == created["id"]]
    assert unchanged == created
