"""API keys: created (shown once), verified by hash, listed and revoked per tenant.

A key looks like ``am_<prefix>_<secret>``: the 12-character prefix finds the row and is safe to
show and log; the secret (256 random bits) is only ever stored as its SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aimesh_gateway.core.invalidation import Invalidations
from aimesh_gateway.db.models import ApiKey, utcnow

KEY_SCHEME = "am"
# last_used_at is written at most this often per key, so verification stays read-mostly.
LAST_USED_GRANULARITY = timedelta(seconds=60)
_LAST_USED_SECONDS = LAST_USED_GRANULARITY.total_seconds()
# How often the verification cache drops the entries it would not trust any more.
SWEEP_SECONDS = 60.0


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(credential: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of a well-formed key, else None."""
    parts = credential.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != 12 or len(parts[2]) < 32:
        return None
    return parts[1], parts[2]


@dataclass(frozen=True)
class KeyRecord:
    """What the API shows about a key (never its secret)."""

    id: str
    prefix: str
    tenant_id: str
    name: str
    roles: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    rpm: int | None
    tpm: int | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyRecord:
        return cls(
            id=row.id,
            prefix=row.prefix,
            tenant_id=row.tenant_id,
            name=row.name,
            roles=tuple(row.roles.split()),
            created_at=row.created_at,
            expires_at=row.expires_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
            rpm=row.rpm,
            tpm=row.tpm,
        )


@dataclass(frozen=True)
class CreatedKey:
    record: KeyRecord
    key: str


class KeyStore:
    """Keys in the database, with a short in-process cache of verified keys.

    The cache keeps the per-request check off the database: a key verified less than
    ``cache_seconds`` ago is trusted again (the secret is still compared). Revoking a key or
    changing its limits drops the entry in this process at once and announces it to the
    other workers and replicas (``invalidations``, over Redis), which drop theirs when the
    message arrives; should it be lost, theirs expire within ``cache_seconds``.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cache_seconds: float = 5.0,
        invalidations: Invalidations | None = None,
    ) -> None:
        self.sessions = sessions
        self.cache_seconds = cache_seconds
        self.invalidations = invalidations
        # Both maps hold only keys that exist in the database (an unknown prefix is not
        # cached), and only those used lately: entries past their use (trusted until, or
        # touched more than LAST_USED_GRANULARITY ago) are swept every SWEEP_SECONDS. So
        # they hold the keys active in the last minute or so, never every key ever used.
        self._last_touch: dict[str, float] = {}
        # prefix -> (trusted until, expires; both per time.monotonic(); secret hash; record)
        self._verified: dict[str, tuple[float, float, str, KeyRecord]] = {}
        self._next_sweep = 0.0
        if invalidations is not None:
            invalidations.on("key", self.forget, self._verified.clear)

    async def create(
        self,
        *,
        tenant_id: str,
        roles: list[str],
        name: str = "",
        expires_at: datetime | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
    ) -> CreatedKey:
        prefix = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        row = ApiKey(
            id=uuid.uuid4().hex,
            prefix=prefix,
            secret_hash=_hash(secret),
            tenant_id=tenant_id,
            name=name,
            roles=" ".join(sorted(set(roles))),
            created_at=utcnow(),
            expires_at=expires_at,
            rpm=rpm,
            tpm=tpm,
        )
        async with self.sessions.begin() as session:
            session.add(row)
        return CreatedKey(KeyRecord.of(row), f"{KEY_SCHEME}_{prefix}_{secret}")

    async def list(self, tenant_id: str) -> list[KeyRecord]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)
            )
            return [KeyRecord.of(row) for row in rows]

    async def get(self, tenant_id: str, key_id: str) -> KeyRecord | None:
        async with self.sessions() as session:
            row = await session.get(ApiKey, key_id)
            return None if row is None or row.tenant_id != tenant_id else KeyRecord.of(row)

    async def get_any(self, key_id: str) -> KeyRecord | None:
        """A key of any tenant (for the operator)."""
        async with self.sessions() as session:
            row = await session.get(ApiKey, key_id)
            return None if row is None else KeyRecord.of(row)

    async def revoke(self, tenant_id: str, key_id: str) -> KeyRecord | None:
        """Revoke a key of ``tenant_id``; None when no such key exists in that tenant."""
        async with self.sessions.begin() as session:
            row = await session.get(ApiKey, key_id)
            if row is None or row.tenant_id != tenant_id:
                return None
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            self._forget_everywhere(row.prefix)
            return KeyRecord.of(row)

    async def set_limits(
        self, tenant_id: str, key_id: str, rpm: int | None, tpm: int | None
    ) -> KeyRecord | None:
        async with self.sessions.begin() as session:
            row = await session.get(ApiKey, key_id)
            if row is None or row.tenant_id != tenant_id:
                return None
            row.rpm, row.tpm = rpm, tpm
            self._forget_everywhere(row.prefix)
            return KeyRecord.of(row)

    def forget(self, prefix: str) -> None:
        """Drop the cached verification of the key with ``prefix`` (in this process)."""
        self._verified.pop(prefix, None)

    def _forget_everywhere(self, prefix: str) -> None:
        self.forget(prefix)
        if self.invalidations is not None:
            self.invalidations.announce("key", prefix)

    @property
    def cached(self) -> int:
        """Keys whose verification or last use this process remembers."""
        return len(self._verified) + len(self._last_touch)

    def sweep(self, now: float) -> None:
        """Forget verifications no longer trusted and last uses already written (in place:
        the invalidation reset holds ``self._verified.clear``)."""
        self._next_sweep = now + SWEEP_SECONDS
        for prefix in [p for p, entry in self._verified.items() if entry[0] <= now]:
            del self._verified[prefix]
        for key_id in [k for k, at in self._last_touch.items() if now - at >= _LAST_USED_SECONDS]:
            del self._last_touch[key_id]

    async def verify(self, credential: str) -> KeyRecord | None:
        """The key's record when the credential is a live key; None otherwise (unknown,
        wrong secret, revoked or expired: the caller cannot tell which)."""
        parsed = parse_key(credential)
        if parsed is None:
            return None
        prefix, secret = parsed
        now = time.monotonic()
        if now >= self._next_sweep:
            self.sweep(now)
        cached = self._verified.get(prefix)
        if cached is None or now >= cached[0]:
            async with self.sessions() as session:
                row = (await session.scalars(select(ApiKey).where(ApiKey.prefix == prefix))).first()
                if row is None:
                    return None
                expires = math.inf
                if row.expires_at is not None:
                    expires = now + (row.expires_at - utcnow()).total_seconds()
                cached = (now + self.cache_seconds, expires, row.secret_hash, KeyRecord.of(row))
            self._verified[prefix] = cached
        _, expires, secret_hash, record = cached
        if not hmac.compare_digest(secret_hash, _hash(secret)):
            return None
        if record.revoked_at is not None or time.monotonic() >= expires:
            return None
        await self._touch(record.id)
        return record

    async def _touch(self, key_id: str) -> None:
        monotonic = time.monotonic()
        last = self._last_touch.get(key_id)
        if last is not None and monotonic - last < _LAST_USED_SECONDS:
            return
        self._last_touch[key_id] = monotonic
        async with self.sessions.begin() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow())
            )
