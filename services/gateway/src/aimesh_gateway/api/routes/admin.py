"""Admin API (role admin): API keys, local users, rate-limit overrides of keys and tenants.

An admin acts inside its own tenant. Only the bootstrap admin key (``AIMESH_ADMIN_API_KEY``,
the operator's credential) may act on other tenants and set rate limits. Keys of another
tenant answer 404, as if they did not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from aimesh_gateway.api.deps import API_PREFIX, AdminPrincipal, KeyStoreDep, UserStoreDep
from aimesh_gateway.core.keys import KeyRecord
from aimesh_gateway.core.limits import set_tenant_limits
from aimesh_gateway.core.middleware import MAX_BODY_EXTRA
from aimesh_gateway.core.ratelimit import TenantLimitSource
from aimesh_gateway.core.security import BOOTSTRAP_SUBJECT, Principal
from aimesh_gateway.core.users import UsernameTaken
from aimesh_gateway.schemas.admin import (
    TENANT_ID_PATTERN,
    KeyCreate,
    KeyCreated,
    KeyInfo,
    KeyList,
    Limits,
    TenantId,
    UserCreate,
    UserInfo,
)
from aimesh_gateway.schemas.problem import COMMON_ERRORS, problem_doc

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"])
# Admin bodies are a few fields: a small per-route limit.
SMALL_BODY = {MAX_BODY_EXTRA: 16 * 1024}

KEY_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem_doc("No such key in the caller's tenant.")
}
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="Key id.")]


def _is_operator(principal: Principal) -> bool:
    return principal.method == "api_key" and principal.subject == BOOTSTRAP_SUBJECT


def _tenant(principal: Principal, requested: str | None) -> str:
    """The tenant to act on: the caller's, or any for the operator."""
    if requested is None or requested == principal.tenant_id:
        return principal.tenant_id
    if _is_operator(principal):
        return requested
    raise HTTPException(403, "an admin acts only on its own tenant")


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
    responses=COMMON_ERRORS,
    summary="Create an API key (the key is shown once)",
)
async def create_key(body: KeyCreate, principal: AdminPrincipal, keys: KeyStoreDep) -> KeyCreated:
    if (body.rpm is not None or body.tpm is not None) and not _is_operator(principal):
        _operator_only()
    created = await keys.create(
        tenant_id=_tenant(principal, body.tenant_id),
        roles=list(body.roles),
        name=body.name,
        expires_at=body.expires_at,
        rpm=body.rpm,
        tpm=body.tpm,
    )
    return KeyCreated(**_info(created.record).model_dump(), key=created.key)


@router.get("/keys", responses=COMMON_ERRORS, summary="List the API keys of a tenant")
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
    request: Request,
) -> Response:
    if tenant_id != principal.tenant_id and not _is_operator(principal):
        raise HTTPException(404, "no such tenant")
    if not _is_operator(principal):
        _operator_only()
    await set_tenant_limits(request.app.state.db_sessions, tenant_id, body.rpm, body.tpm)
    cache: TenantLimitSource = request.app.state.tenant_limits
    cache.forget(tenant_id)
    return Response(status_code=204)


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
    return UserInfo(
        id=record.id, username=record.username, tenant_id=record.tenant_id, roles=list(record.roles)
    )
