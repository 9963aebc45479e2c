"""Usage records say which request, provider and prompt answered; feedback on answers.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from aimesh_gateway.db.models import UtcDateTime

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot add NOT NULL columns with ALTER TABLE alone in all
    # cases; batch mode recreates the table there and is a plain ALTER on PostgreSQL.
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("request_id", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("provider", sa.String(64), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("prompt_version", sa.String(64), nullable=False, server_default="")
        )
    op.create_index("ix_usage_records_request_id", "usage_records", ["request_id"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("tenant_id", "request_id", "subject", name="uq_feedback_subject"),
        sa.CheckConstraint("rating IN (1, -1)", name="ck_feedback_rating"),
    )
    op.create_index("ix_feedback_tenant_time", "feedback", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_tenant_time", "feedback")
    op.drop_table("feedback")
    op.drop_index("ix_usage_records_request_id", "usage_records")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("prompt_version")
        batch.drop_column("provider")
        batch.drop_column("request_id")
