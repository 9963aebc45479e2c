"""Local users: argon2id password hashes, short-lived access JWTs and rotating refresh tokens.

The access token is an HS256 JWT signed with ``AIMESH_JWT_SECRET`` (the secret the gateway
already verifies), so every worker and replica accepts it without a database read. The refresh
token is opaque, stored as its SHA-256, usable once: each refresh returns a new one.

Admins list, change (roles, disabled) and delete the users of their tenant. Logins and refreshes
read the user row, so a change holds from the user's next login or refresh: a disabled or
deleted user gets no new token, and new tokens carry the new roles. An access token already
issued stays valid until it expires (``access_token_ttl_seconds``): it is never looked up.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aimesh_gateway.core.config import Settings
from aimesh_gateway.db.models import RefreshToken, User, utcnow

_hasher = PasswordHasher()
# Verified against when the username is unknown, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class UsernameTaken(Exception):
    pass


class UserUnavailable(Exception):
    """The user was disabled or deleted after its credential was checked."""


def user_subject(user_id: str) -> str:
    """The ``sub`` of the access tokens of a local user."""
    return f"user:{user_id}"


@dataclass(frozen=True)
class UserRecord:
    """What the API shows about a user (never the password hash)."""

    id: str
    username: str
    tenant_id: str
    roles: tuple[str, ...]
    created_at: datetime
    disabled_at: datetime | None = None

    @classmethod
    def of(cls, row: User) -> UserRecord:
        return cls(
            id=row.id,
            username=row.username,
            tenant_id=row.tenant_id,
            roles=tuple(row.roles.split()),
            created_at=row.created_at,
            disabled_at=row.disabled_at,
        )


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _roles(roles: Iterable[str]) -> str:
    return " ".join(sorted(set(roles)))


class UserStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    async def create(
        self, *, username: str, password: str, tenant_id: str, roles: list[str]
    ) -> UserRecord:
        password_hash = await asyncio.to_thread(_hasher.hash, password)
        row = User(
            id=uuid.uuid4().hex,
            username=username,
            tenant_id=tenant_id,
            password_hash=password_hash,
            roles=_roles(roles),
            created_at=utcnow(),
        )
        try:
            async with self.sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            raise UsernameTaken(username) from None
        return UserRecord.of(row)

    async def list(self, tenant_id: str) -> list[UserRecord]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(User)
                .where(User.tenant_id == tenant_id)
                .order_by(User.created_at, User.username)
            )
            return [UserRecord.of(row) for row in rows]

    async def get(self, tenant_id: str, reference: str) -> UserRecord | None:
        """The user of ``tenant_id`` whose id or username is ``reference``; None if none."""
        return await self._find(reference, tenant_id)

    async def get_any(self, reference: str) -> UserRecord | None:
        """A user of any tenant by id or username (for the operator)."""
        return await self._find(reference, None)

    async def _find(self, reference: str, tenant_id: str | None) -> UserRecord | None:
        query = select(User).where(or_(User.id == reference, User.username == reference))
        if tenant_id is not None:
            query = query.where(User.tenant_id == tenant_id)
        async with self.sessions() as session:
            rows = list(await session.scalars(query))
        # An id matches before a username (a username may look like another user's id).
        rows.sort(key=lambda row: row.id != reference)
        return UserRecord.of(rows[0]) if rows else None

    async def update(
        self,
        tenant_id: str,
        user_id: str,
        *,
        roles: Iterable[str] | None = None,
        disabled: bool | None = None,
    ) -> UserRecord | None:
        """Change the roles and/or disable (or enable) a user of ``tenant_id``; None when no
        such user exists in that tenant. Disabling also revokes the user's refresh tokens
        (enabling it again does not bring them back)."""
        async with self.sessions.begin() as session:
            row = await session.get(User, user_id)
            if row is None or row.tenant_id != tenant_id:
                return None
            if roles is not None:
                row.roles = _roles(roles)
            if disabled is True:
                if row.disabled_at is None:
                    row.disabled_at = utcnow()
                await session.execute(delete(RefreshToken).where(RefreshToken.user_id == user_id))
            elif disabled is False:
                row.disabled_at = None
            return UserRecord.of(row)

    async def delete(self, tenant_id: str, user_id: str) -> bool:
        """Delete a user of ``tenant_id`` and its refresh tokens; False when no such user."""
        async with self.sessions.begin() as session:
            row = await session.get(User, user_id)
            if row is None or row.tenant_id != tenant_id:
                return False
            # Explicitly (the foreign key would cascade too), and before the user's row is
            # locked, so no lock on the user is held while waiting for a refresh in flight.
            await session.execute(delete(RefreshToken).where(RefreshToken.user_id == user_id))
            await session.delete(row)
        return True

    async def check_password(self, username: str, password: str) -> UserRecord | None:
        async with self.sessions() as session:
            row = (await session.scalars(select(User).where(User.username == username))).first()
        stored = row.password_hash if row is not None else _DUMMY_HASH
        try:
            await asyncio.to_thread(_hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row.disabled_at is not None:
            return None
        return UserRecord.of(row)

    async def issue(self, user: UserRecord) -> TokenPair:
        """A new token pair for ``user``, with its roles as they are now.

        Raises :class:`UserUnavailable` when the user was disabled or deleted since its
        credential was checked.
        """
        refresh = secrets.token_urlsafe(32)
        try:
            async with self.sessions.begin() as session:
                # A shared lock (PostgreSQL): an admin's disable or delete waits for this
                # insert, then removes the new refresh token with the others.
                row = await session.get(User, user.id, with_for_update={"read": True})
                if row is None or row.disabled_at is not None:
                    raise UserUnavailable(user.id)
                current = UserRecord.of(row)
                session.add(
                    RefreshToken(
                        id=uuid.uuid4().hex,
                        token_hash=_sha256(refresh),
                        user_id=current.id,
                        expires_at=utcnow()
                        + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
                    )
                )
        except IntegrityError:
            # Deleted between the read and the insert (SQLite takes no row lock).
            raise UserUnavailable(user.id) from None
        return TokenPair(
            self._access_token(current), refresh, self.settings.access_token_ttl_seconds
        )

    async def refresh(self, refresh_token: str) -> TokenPair | None:
        """A new pair for a live, unused refresh token (which is used up); None otherwise."""
        now = utcnow()
        async with self.sessions.begin() as session:
            # One conditional UPDATE uses the token up: of two concurrent refreshes with the
            # same token exactly one gets its row back, on SQLite (no row locks) as well.
            user_id = await session.scalar(
                update(RefreshToken)
                .where(
                    RefreshToken.token_hash == _sha256(refresh_token),
                    RefreshToken.used_at.is_(None),
                    RefreshToken.expires_at > now,
                )
                .values(used_at=now)
                .returning(RefreshToken.user_id)
            )
            if user_id is None:
                return None
            user = await session.get(User, user_id)
            if user is None or user.disabled_at is not None:
                return None
            record = UserRecord.of(user)
        try:
            return await self.issue(record)
        except UserUnavailable:
            return None

    def _access_token(self, user: UserRecord) -> str:
        secret = self.settings.jwt_secret
        assert secret is not None, "local login needs AIMESH_JWT_SECRET"
        now = utcnow()
        claims = {
            "iss": self.settings.token_issuer,
            "sub": user_subject(user.id),
            "aud": self.settings.jwt_audience,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(now.timestamp()) + self.settings.access_token_ttl_seconds,
            "jti": uuid.uuid4().hex,
            self.settings.jwt_tenant_claim: user.tenant_id,
            self.settings.jwt_roles_claim: list(user.roles),
            "preferred_username": user.username,
        }
        return jwt.encode(claims, secret.get_secret_value(), algorithm="HS256")
