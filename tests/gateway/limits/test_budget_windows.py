"""Budget windows and matching (pure functions of limits/budgets.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aimesh_gateway.auth.security import Principal, Role
from aimesh_gateway.db.models import Budget
from aimesh_gateway.limits.budgets import Quote, applies, budget_subject, window_of


def _budget(**fields: object) -> Budget:
    values: dict[str, object] = {
        "id": "b" * 32,
        "tenant_id": "acme",
        "scope": "tenant",
        "subject": "",
        "model": "",
        "period": "day",
        "rolling_seconds": 0,
        "limit_micros": 1_000_000,
        "mode": "hard",
        **fields,
    }
    return Budget(**values)


def _at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("day", _at(2026, 12, 31, 23, 59, 59), _at(2026, 12, 31), _at(2027, 1, 1)),
        ("month", _at(2026, 12, 6, 19, 0), _at(2026, 12, 1), _at(2027, 1, 1)),
        ("month", _at(2028, 2, 29, 12, 0), _at(2028, 2, 1), _at(2028, 3, 1)),
    ],
)
def test_calendar_windows_are_utc_days_and_months(
    period: str, now: float, start: float, end: float
) -> None:
    window = window_of(_budget(period=period), now)
    assert (window.start, window.end, window.bucket) == (start, end, start)
    assert window.key == str(int(start))


def test_a_rolling_window_counts_buckets_back_over_its_length() -> None:
    window = window_of(
        _budget(period="rolling", rolling_seconds=86_400), _at(2026, 12, 6, 12, 0, 30)
    )
    assert window.width == 864  # about a hundred buckets
    assert window.bucket % 864 == 0
    assert window.bucket <= _at(2026, 12, 6, 12, 0, 30)
    # The oldest counted bucket still overlaps the last 24 hours.
    assert window.bucket - window.start == 86_400 - 864
    assert window.end == 0
    assert window.key == "r"
    short = window_of(_budget(period="rolling", rolling_seconds=600), _at(2026, 12, 6))
    assert short.width == 60  # never finer than a minute


def test_budgets_apply_by_scope_subject_and_alias() -> None:
    alice = Principal("alice", "acme", frozenset({Role.USER}), "jwt")
    key = Principal("key:abc", "acme", frozenset({Role.USER}), "api_key")
    assert applies(_budget(), alice, "default")
    assert not applies(_budget(model="fast"), alice, "default")
    assert applies(_budget(scope="user", subject="alice"), alice, "default")
    assert not applies(_budget(scope="user", subject="alice"), key, "default")
    assert applies(_budget(scope="key", subject=budget_subject("key", "abc")), key, "x")
    assert budget_subject("key", "key:abc") == "key:abc"


def test_a_quote_rounds_up_to_the_micro_dollar() -> None:
    quote = Quote("default", True, 0.15, 0.6, 1024, 8192)
    assert quote.cost_micros(1000, 0) == 150_000
    assert quote.cost_micros(1, 1) == 750
    cheap = Quote("cheap", True, 0.0001, 0.0, 1024, 8192)
    assert cheap.cost_micros(1, 0) == 1  # 0.1 micro-dollar: reserved as one, never free
