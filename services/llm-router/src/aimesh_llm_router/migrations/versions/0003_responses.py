"""The responses of the OpenAI Responses API, kept beside the conversations (one owner of
conversation data) until their retention ends.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "llm_router_responses",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("previous_response_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("response_json", sa.Text(), nullable=False),
        sa.Column("input_items_json", sa.Text(), nullable=False),
        sa.Column("context_json", sa.Text(), nullable=False),
    )
    op.create_index("llm_router_responses_by_expiry", "llm_router_responses", ["expires_at"])


def downgrade() -> None:
    op.drop_index("llm_router_responses_by_expiry", table_name="llm_router_responses")
    op.drop_table("llm_router_responses")
