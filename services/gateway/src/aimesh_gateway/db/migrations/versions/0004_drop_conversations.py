"""Drop the gateway's copy of the conversation metadata: the LLM router owns it and serves
it to the tenant's admins (``ListTenantConversations``).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from aimesh_gateway.db.models import UtcDateTime

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.drop_index("ix_conversations_tenant_subject", "conversations")
    op.drop_index("ix_conversations_tenant_updated", "conversations")
    op.drop_table("conversations")


def downgrade() -> None:
    """The table as 0003 made it, empty (the rows came from the routes' mirror writes)."""
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("collection", sa.String(64), nullable=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("deleted_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_conversations_tenant_updated", "conversations", ["tenant_id", "updated_at"])
    op.create_index("ix_conversations_tenant_subject", "conversations", ["tenant_id", "subject"])
