"""Jobs keep the trace context of the request that submitted them.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # The submitting request's W3C traceparent, continued by the job runner (nullable:
    # jobs submitted outside a trace, and those submitted before this revision, have none).
    op.add_column("retrieval_ingest_jobs", sa.Column("traceparent", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("retrieval_ingest_jobs") as batch:
        batch.drop_column("traceparent")
