"""Admin API (role admin): API keys, local users, rate-limit overrides of keys and tenants.

An admin acts inside its own tenant. Only the bootstrap admin key (``AIMESH_ADMIN_API_KEY``,
the operator's credential) may act on other tenants and set rate limits. Other tenants, and
their keys and users, answer 404 to a tenant's admin, as if they did not exist: a 403 would
tell that they do.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response

from aimesh_gateway.api.deps import (
    API_PREFIX,
    AdminPrincipal,
    DbSessionsDep,
    KeyStoreDep,
    TenantLimitsDep,
    UserStoreDep,
)
from aimesh_gateway.auth.keys import KeyRecord
from aimesh_gateway.auth.security import BOOTSTRAP_SUBJECT, Principal
from aimesh_gateway.auth.users import UsernameTaken, UserRecord, UserStore, user_subject
from aimesh_gateway.core.jsonbody import CheckedJSONRoute
from aimesh_gateway.limits.http import MAX_BODY_EXTRA
from aimesh_gateway.limits.tenants import set_tenant_limits
from aimesh_gateway.schemas.admin import (
    TENANT_ID_PATTERN,
    USERNAME_PATTERN,
    KeyCreate,
    KeyCreated,
    KeyInfo,
    KeyList,
    Limits,
    TenantId,
    UserCreate,
    UserInfo,
    UserList,
    UserUpdate,
)
from aimesh_gateway.schemas.problem import COMMON_ERRORS, problem_doc

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"], route_class=CheckedJSONRoute)
# Admin bodies are a few fields: a small per-route limit.
SMALL_BODY = {MAX_BODY_EXTRA: 16 * 1024}

KEY_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem_doc("No such key in the caller's tenant.")
}
USER_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem_doc("No such user in the caller's tenant.")
}
TENANT_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem_doc("Another tenant than the caller's (only the operator may name one).")
}
SELF_LOCKOUT: dict[int | str, dict[str, Any]] = {
    409: problem_doc("The change would lock the calling admin out (its own user).")
}
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="Key id.")]
UserRef = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=USERNAME_PATTERN,
        description="The user's id or username.",
        examples=["alice"],
    ),
]


def _is_operator(principal: Principal) -> bool:
    return principal.method == "api_key" and principal.subject == BOOTSTRAP_SUBJECT


def _tenant(principal: Principal, requested: str | None) -> str:
    """The tenant to act on: the caller's, or any for the operator."""
    if requested is None or requested == principal.tenant_id:
        return principal.tenant_id
    if _is_operator(principal):
        return requested
    raise _tenant_not_found(requested)


def _tenant_not_found(tenant_id: str) -> HTTPException:
    # 404, not 403: a tenant's admin must not learn whether another tenant exists.
    return HTTPException(404, f"tenant {tenant_id!r} not found")


def _operator_only() -> None:
    # Limits protect the platform from a tenant: a tenant's own admin cannot raise them.
    raise HTTPException(403, "only the operator (bootstrap admin key) may set rate limits")


def _info(record: KeyRecord) -> KeyInfo:
    return KeyInfo(
        id=record.id,
        prefix=record.prefix,
        tenant_id=record.tenant_id,
        name=record.name,
        roles=list(record.roles),
        created_at=record.created_at,
        expires_at=record.expires_at,
        last_used_at=record.last_used_at,
        revoked_at=record.revoked_at,
        rpm=record.rpm,
        tpm=record.tpm,
    )


@router.post(
    "/keys",
    status_code=201,
    openapi_extra=SMALL_BODY,
    responses={**COMMON_ERRORS, **TENANT_NOT_FOUND},
    summary="Create an API key (the key is shown once)",
)
async def create_key(body: KeyCreate, principal: AdminPrincipal, keys: KeyStoreDep) -> KeyCreated:
    tenant_id = _tenant(principal, body.tenant_id)
    if (body.rpm is not None or body.tpm is not None) and not _is_operator(principal):
        _operator_only()
    created = await keys.create(
        tenant_id=tenant_id,
        roles=list(body.roles),
        name=body.name,
        expires_at=body.expires_at,
        rpm=body.rpm,
        tpm=body.tpm,
    )
    return KeyCreated(**_info(created.record).model_dump(), key=created.key)


@router.get(
    "/keys",
    responses={**COMMON_ERRORS, **TENANT_NOT_FOUND},
    summary="List the API keys of a tenant",
)
async def list_keys(
    principal: AdminPrincipal,
    keys: KeyStoreDep,
    tenant_id: Annotated[str | None, Query(pattern=TENANT_ID_PATTERN)] = None,
) -> KeyList:
    records = await keys.list(_tenant(principal, tenant_id))
    return KeyList(keys=[_info(record) for record in records])


async def _scoped_key(principal: Principal, keys: KeyStoreDep, key_id: str) -> KeyRecord:
    record = await keys.get_any(key_id) if _is_operator(principal) else None
    if record is None:
        record = await keys.get(principal.tenant_id, key_id)
    if record is None:
        raise HTTPException(404, "no such key")
    return record


@router.get(
    "/keys/{key_id}", responses={**COMMON_ERRORS, **KEY_NOT_FOUND}, summary="Show an API key"
)
async def get_key(key_id: KeyId, principal: AdminPrincipal, keys: KeyStoreDep) -> KeyInfo:
    return _info(await _scoped_key(principal, keys, key_id))


@router.delete(
    "/keys/{key_id}",
    responses={**COMMON_ERRORS, **KEY_NOT_FOUND},
    summary="Revoke an API key (at once, everywhere)",
)
async def revoke_key(key_id: KeyId, principal: AdminPrincipal, keys: KeyStoreDep) -> KeyInfo:
    record = await _scoped_key(principal, keys, key_id)
    revoked = await keys.revoke(record.tenant_id, record.id)
    assert revoked is not None
    return _info(revoked)


@router.put(
    "/keys/{key_id}/limits",
    openapi_extra=SMALL_BODY,
    responses={**COMMON_ERRORS, **KEY_NOT_FOUND},
    summary="Override the rate limits of an API key",
)
async def set_key_limits(
    key_id: KeyId, body: Limits, principal: AdminPrincipal, keys: KeyStoreDep
) -> KeyInfo:
    record = await _scoped_key(principal, keys, key_id)
    if not _is_operator(principal):
        _operator_only()
    updated = await keys.set_limits(record.tenant_id, record.id, body.rpm, body.tpm)
    assert updated is not None
    return _info(updated)


@router.put(
    "/tenants/{tenant_id}/limits",
    openapi_extra=SMALL_BODY,
    status_code=204,
    responses={**COMMON_ERRORS, 404: problem_doc("No such tenant for the caller.")},
    summary="Override the rate limits of a tenant",
)
async def set_tenant_limit(
    tenant_id: Annotated[TenantId, Path()],
    body: Limits,
    principal: AdminPrincipal,
    sessions: DbSessionsDep,
    tenant_limits: TenantLimitsDep,
) -> Response:
    if tenant_id != principal.tenant_id and not _is_operator(principal):
        raise _tenant_not_found(tenant_id)
    if not _is_operator(principal):
        _operator_only()
    await set_tenant_limits(sessions, tenant_id, body.rpm, body.tpm)
    tenant_limits.forget(tenant_id)
    return Response(status_code=204)


def _user_info(record: UserRecord) -> UserInfo:
    return UserInfo(
        id=record.id,
        username=record.username,
        tenant_id=record.tenant_id,
        roles=list(record.roles),
        created_at=record.created_at,
        disabled_at=record.disabled_at,
    )


@router.post(
    "/users",
    openapi_extra=SMALL_BODY,
    status_code=201,
    responses={**COMMON_ERRORS, 409: problem_doc("The username is taken.")},
    summary="Create a local user of the caller's tenant",
)
async def create_user(body: UserCreate, principal: AdminPrincipal, users: UserStoreDep) -> UserInfo:
    try:
        record = await users.create(
            username=body.username,
            password=body.password,
            tenant_id=principal.tenant_id,
            roles=list(body.roles),
        )
    except UsernameTaken:
        raise HTTPException(409, "the username is taken") from None
    return _user_info(record)


@router.get(
    "/users",
    responses={**COMMON_ERRORS, **TENANT_NOT_FOUND},
    summary="List the local users of a tenant",
)
async def list_users(
    principal: AdminPrincipal,
    users: UserStoreDep,
    tenant_id: Annotated[str | None, Query(pattern=TENANT_ID_PATTERN)] = None,
) -> UserList:
    records = await users.list(_tenant(principal, tenant_id))
    return UserList(users=[_user_info(record) for record in records])


async def _scoped_user(principal: Principal, users: UserStore, reference: str) -> UserRecord:
    record = await users.get_any(reference) if _is_operator(principal) else None
    if record is None:
        record = await users.get(principal.tenant_id, reference)
    if record is None:
        raise HTTPException(404, "no such user")
    return record


def _is_self(principal: Principal, record: UserRecord) -> bool:
    """Whether the caller is ``record`` (logged in as that local user)."""
    return (
        principal.method == "jwt"
        and principal.tenant_id == record.tenant_id
        and principal.subject == user_subject(record.id)
    )


def _self_lockout() -> HTTPException:
    return HTTPException(
        409, "an admin cannot disable, demote or delete its own user; ask another admin"
    )


@router.patch(
    "/users/{user}",
    openapi_extra=SMALL_BODY,
    responses={**COMMON_ERRORS, **USER_NOT_FOUND, **SELF_LOCKOUT},
    summary="Change the roles of a local user, or disable or enable it",
)
async def update_user(
    user: UserRef, body: UserUpdate, principal: AdminPrincipal, users: UserStoreDep
) -> UserInfo:
    """Roles apply from the user's next login or refresh; an access token already issued
    keeps its roles until it expires. Disabling refuses the user's logins and refreshes and
    revokes its refresh tokens."""
    record = await _scoped_user(principal, users, user)
    if _is_self(principal, record) and (
        body.disabled is True or (body.roles is not None and "admin" not in body.roles)
    ):
        raise _self_lockout()
    updated = await users.update(
        record.tenant_id,
        record.id,
        roles=body.roles,
        disabled=body.disabled,
    )
    if updated is None:  # deleted meanwhile
        raise HTTPException(404, "no such user")
    return _user_info(updated)


@router.delete(
    "/users/{user}",
    status_code=204,
    responses={**COMMON_ERRORS, **USER_NOT_FOUND, **SELF_LOCKOUT},
    summary="Delete a local user and its refresh tokens",
)
async def delete_user(user: UserRef, principal: AdminPrincipal, users: UserStoreDep) -> Response:
    record = await _scoped_user(principal, users, user)
    if _is_self(principal, record):
        raise _self_lockout()
    if not await users.delete(record.tenant_id, record.id):
        raise HTTPException(404, "no such user")
    return Response(status_code=204)
