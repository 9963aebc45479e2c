"""Token usage of a tenant, for admins."""

from __future__ import annotations

from pydantic import BaseModel, Field


class UsageTotals(BaseModel):
    requests: int = Field(ge=0, description="Calls that spent tokens.")
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


class UsageByKey(UsageTotals):
    subject: str = Field(description="API key id or user.")


class UsageByDay(UsageTotals):
    day: str = Field(description="UTC day, YYYY-MM-DD.", examples=["2026-11-25"])


class UsageReport(BaseModel):
    by_key: list[UsageByKey] = Field(description="Per API key or user, most requests first.")
    by_day: list[UsageByDay] = Field(description="Per UTC day with usage, oldest first.")
    total: UsageTotals
