"""Budgets in money: the budgets table (spend is rebuilt from ``usage_records.cost_usd``,
added by 0005).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from aimesh_gateway.db.models import UtcDateTime

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False, server_default=""),
        sa.Column("model", sa.String(200), nullable=False, server_default=""),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("rolling_seconds", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("limit_micros", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False, server_default="hard"),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("scope IN ('key', 'user', 'tenant')", name="ck_budgets_scope"),
        sa.CheckConstraint("period IN ('day', 'month', 'rolling')", name="ck_budgets_period"),
        sa.CheckConstraint("mode IN ('hard', 'soft')", name="ck_budgets_mode"),
    )
    op.create_index("ix_budgets_tenant", "budgets", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_budgets_tenant", "budgets")
    op.drop_table("budgets")
