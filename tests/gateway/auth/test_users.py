"""The user store on both backends (SQLite and the real PostgreSQL): listing, lookup by id or
username within a tenant, role changes, disabling and deleting, and what they do to logins
and refresh tokens."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import jwt
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aimesh_gateway.auth.users import TokenPair, UserRecord, UserStore, UserUnavailable
from aimesh_gateway.core.config import Settings
from aimesh_gateway.db.engine import session_factory
from aimesh_gateway.db.models import RefreshToken
from tests.gateway.helpers import JWT_SECRET

PASSWORD = "correct horse battery"


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def _name() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sessions(db_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(db_engine)


@pytest.fixture
def store(sessions: async_sessionmaker[AsyncSession]) -> UserStore:
    return UserStore(sessions, Settings(jwt_secret=JWT_SECRET))


async def _create(store: UserStore, tenant: str, roles: list[str]) -> UserRecord:
    return await store.create(username=_name(), password=PASSWORD, tenant_id=tenant, roles=roles)


async def _refresh_tokens(sessions: async_sessionmaker[AsyncSession], user_id: str) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(RefreshToken).where(RefreshToken.user_id == user_id)
        )
    return int(count or 0)


def _claims(pair: TokenPair) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        pair.access_token, JWT_SECRET, algorithms=["HS256"], audience="aimesh"
    )
    return claims


async def test_list_and_lookup_stay_in_the_tenant(store: UserStore) -> None:
    mine, theirs = _tenant(), _tenant()
    first = await _create(store, mine, ["editor", "user", "editor"])
    second = await _create(store, mine, ["user"])
    other = await _create(store, theirs, ["admin"])
    assert first.roles == ("editor", "user")
    assert first.disabled_at is None

    assert await store.list(mine) == [first, second]
    assert await store.list(theirs) == [other]
    assert await store.list(_tenant()) == []

    assert await store.get(mine, first.id) == first
    assert await store.get(mine, first.username) == first
    assert await store.get(mine, other.id) is None
    assert await store.get(mine, other.username) is None
    assert await store.get(mine, "nobody") is None
    assert await store.get_any(other.username) == other
    assert await store.get_any(other.id) == other


async def test_an_id_wins_over_a_username_that_looks_like_it(store: UserStore) -> None:
    tenant = _tenant()
    target = await _create(store, tenant, ["user"])
    lookalike = await store.create(
        username=target.id, password=PASSWORD, tenant_id=tenant, roles=["user"]
    )
    assert await store.get(tenant, target.id) == target
    assert await store.get_any(target.id) == target
    assert await store.get(tenant, lookalike.id) == lookalike


async def test_update_changes_roles_and_disables(
    store: UserStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = _tenant()
    user = await _create(store, tenant, ["user"])
    pair = await store.issue(user)
    await store.issue(user)
    assert await _refresh_tokens(sessions, user.id) == 2

    promoted = await store.update(tenant, user.id, roles=["admin", "user"])
    assert promoted == UserRecord(
        user.id, user.username, tenant, ("admin", "user"), user.created_at, None
    )
    assert await _refresh_tokens(sessions, user.id) == 2  # a role change keeps the tokens
    refreshed = await store.refresh(pair.refresh_token)
    assert refreshed is not None
    assert _claims(refreshed)["roles"] == ["admin", "user"]

    disabled = await store.update(tenant, user.id, disabled=True)
    assert disabled is not None
    assert disabled.disabled_at is not None
    assert disabled.roles == ("admin", "user")
    assert await _refresh_tokens(sessions, user.id) == 0
    assert await store.refresh(refreshed.refresh_token) is None
    assert await store.check_password(user.username, PASSWORD) is None
    with pytest.raises(UserUnavailable):
        await store.issue(user)
    assert await store.list(tenant) == [disabled]

    again = await store.update(tenant, user.id, disabled=True, roles=["user"])
    assert again is not None
    assert again.disabled_at == disabled.disabled_at
    assert again.roles == ("user",)

    enabled = await store.update(tenant, user.id, disabled=False)
    assert enabled is not None
    assert enabled.disabled_at is None
    assert await store.check_password(user.username, PASSWORD) == enabled
    assert await store.update(tenant, user.id) == enabled  # nothing to change


async def test_issue_carries_the_current_roles(store: UserStore) -> None:
    tenant = _tenant()
    user = await _create(store, tenant, ["editor"])
    await store.update(tenant, user.id, roles=["user"])
    claims = _claims(await store.issue(user))  # a record read before the change
    assert claims["roles"] == ["user"]
    assert claims["sub"] == f"user:{user.id}"


async def test_delete_removes_the_user_and_its_tokens(
    store: UserStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = _tenant()
    user = await _create(store, tenant, ["user"])
    kept = await _create(store, tenant, ["user"])
    pair = await store.issue(user)
    kept_pair = await store.issue(kept)

    assert await store.delete(_tenant(), user.id) is False  # another tenant's: not found
    assert await store.update(_tenant(), user.id, disabled=True) is None
    assert await store.get(tenant, user.id) == user

    assert await store.delete(tenant, user.id) is True
    assert await store.delete(tenant, user.id) is False
    assert await store.update(tenant, user.id, roles=["admin"]) is None
    assert await store.get(tenant, user.id) is None
    assert await store.list(tenant) == [kept]
    assert await _refresh_tokens(sessions, user.id) == 0
    assert await store.refresh(pair.refresh_token) is None
    assert await store.check_password(user.username, PASSWORD) is None
    with pytest.raises(UserUnavailable):
        await store.issue(user)
    assert await store.refresh(kept_pair.refresh_token) is not None


async def test_a_refresh_token_is_used_once_even_by_concurrent_refreshes(store: UserStore) -> None:
    user = await _create(store, _tenant(), ["user"])
    pair = await store.issue(user)
    results = await asyncio.gather(*(store.refresh(pair.refresh_token) for _ in range(8)))
    fresh = [result for result in results if result is not None]
    assert len(fresh) == 1, results
    assert await store.refresh(pair.refresh_token) is None
    assert await store.refresh(fresh[0].refresh_token) is not None  # the new one works once
