"""Admin API: budgets in money (see ``limits/budgets.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aimesh_gateway.schemas.common import RequestModel

Scope = Literal["key", "user", "tenant"]
Period = Literal["day", "month", "rolling"]
Mode = Literal["hard", "soft"]
MAX_LIMIT_USD = 10_000_000.0


class _BudgetFields(RequestModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200, description="A label for people.")
    model: str = Field(
        "",
        max_length=200,
        description="Narrow the budget to calls to this model alias ('' for every alias).",
    )
    limit_usd: float = Field(gt=0, le=MAX_LIMIT_USD, description="Cap in US dollars.")
    window: Period = Field(
        description="day or month (UTC calendar windows), or rolling (rolling_seconds)."
    )
    rolling_seconds: int = Field(
        0, ge=0, le=90 * 86_400, description="Length of a rolling window (60 s to 90 days)."
    )
    mode: Mode = Field("hard", description="hard refuses calls past the cap; soft only alerts.")

    @model_validator(mode="after")
    def _rolling(self) -> _BudgetFields:
        if self.window == "rolling" and self.rolling_seconds < 60:
            raise ValueError("rolling_seconds must be at least 60 for a rolling window")
        if self.window != "rolling" and self.rolling_seconds:
            raise ValueError("rolling_seconds is only for a rolling window")
        return self


class BudgetCreate(_BudgetFields):
    scope: Scope = Field(description="Whose calls count: one API key, one user or the tenant.")
    subject: str = Field(
        "",
        max_length=200,
        description="The API key's id (scope key) or the user's subject (scope user); empty "
        "for the tenant.",
        examples=["3f2a..."],
    )

    @model_validator(mode="after")
    def _subject(self) -> BudgetCreate:
        if self.scope == "tenant" and self.subject:
            raise ValueError("subject must be empty for a tenant budget")
        if self.scope != "tenant" and not self.subject:
            raise ValueError(f"subject is required for a {self.scope} budget")
        return self


class BudgetUpdate(RequestModel):
    """The fields to change; window changes take effect with the next call."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    limit_usd: float | None = Field(None, gt=0, le=MAX_LIMIT_USD)
    mode: Mode | None = None


class BudgetSpend(BaseModel):
    spent_usd: float = Field(description="Spend in the current window (the usage records).")
    reserved_usd: float = Field(description="Reserved by calls in flight.")
    forecast_usd: float = Field(
        description="Spend at the end of a calendar window at the pace so far (rolling: the "
        "spend now)."
    )
    percent: float = Field(description="Spend as a percentage of the limit.")
    window_start: datetime
    window_end: datetime | None = Field(description="When a calendar window resets.")


class BudgetInfo(BaseModel):
    id: str
    tenant_id: str
    name: str
    scope: Scope
    subject: str
    model: str
    limit_usd: float
    window: Period
    rolling_seconds: int
    mode: Mode
    created_at: datetime
    updated_at: datetime
    spend: BudgetSpend | None = Field(None, description="Current window (list and show).")


class BudgetList(BaseModel):
    budgets: list[BudgetInfo]
