"""Local users: argon2id password hashes, short-lived access JWTs and rotating refresh tokens.

The access token is an HS256 JWT signed with ``AIMESH_JWT_SECRET`` (the secret the gateway
already verifies), so every worker and replica accepts it without a database read. The refresh
token is opaque, stored as its SHA-256, usable once: each refresh returns a new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aimesh_gateway.core.config import Settings
from aimesh_gateway.db.models import RefreshToken, User, utcnow

_hasher = PasswordHasher()
# Verified against when the username is unknown, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class UsernameTaken(Exception):
    pass


@dataclass(frozen=True)
class UserRecord:
    id: str
    username: str
    tenant_id: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


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
            roles=" ".join(sorted(set(roles))),
            created_at=utcnow(),
        )
        try:
            async with self.sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            raise UsernameTaken(username) from None
        return UserRecord(row.id, row.username, row.tenant_id, tuple(row.roles.split()))

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
        return UserRecord(row.id, row.username, row.tenant_id, tuple(row.roles.split()))

    async def issue(self, user: UserRecord) -> TokenPair:
        refresh = secrets.token_urlsafe(32)
        async with self.sessions.begin() as session:
            session.add(
                RefreshToken(
                    id=uuid.uuid4().hex,
                    token_hash=_sha256(refresh),
                    user_id=user.id,
                    expires_at=utcnow()
                    + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
                )
            )
        return TokenPair(self._access_token(user), refresh, self.settings.access_token_ttl_seconds)

    async def refresh(self, refresh_token: str) -> TokenPair | None:
        """A new pair for a live, unused refresh token (which is used up); None otherwise."""
        now = utcnow()
        async with self.sessions.begin() as session:
            row = (
                await session.scalars(
                    select(RefreshToken)
                    .where(RefreshToken.token_hash == _sha256(refresh_token))
                    .with_for_update()
                )
            ).first()
            if row is None or row.used_at is not None or row.expires_at <= now:
                return None
            row.used_at = now
            user = await session.get(User, row.user_id)
            if user is None or user.disabled_at is not None:
                return None
            record = UserRecord(user.id, user.username, user.tenant_id, tuple(user.roles.split()))
        return await self.issue(record)

    def _access_token(self, user: UserRecord) -> str:
        secret = self.settings.jwt_secret
        assert secret is not None, "local login needs AIMESH_JWT_SECRET"
        now = utcnow()
        claims = {
            "iss": self.settings.token_issuer,
            "sub": f"user:{user.id}",
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
