"""Per-tenant rate-limit overrides stored in the database."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aimesh_gateway.db.models import TenantLimit
from aimesh_gateway.limits.ratelimit import TenantLimitLoader


def tenant_limit_loader(sessions: async_sessionmaker[AsyncSession]) -> TenantLimitLoader:
    async def load(tenant_id: str) -> tuple[int | None, int | None] | None:
        async with sessions() as session:
            row = await session.get(TenantLimit, tenant_id)
            return None if row is None else (row.rpm, row.tpm)

    return load


async def set_tenant_limits(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str, rpm: int | None, tpm: int | None
) -> None:
    async with sessions.begin() as session:
        row = await session.get(TenantLimit, tenant_id)
        if row is None:
            session.add(TenantLimit(tenant_id=tenant_id, rpm=rpm, tpm=tpm))
        else:
            row.rpm, row.tpm = rpm, tpm
