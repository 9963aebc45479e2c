"""The router owns each conversation's metadata: last activity, size and deletion (the
gateway mirrored them before), and lists a tenant's conversations by last activity.

Existing conversations: last activity = creation (no message kept a time), size = their
messages counted.

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
    # Server defaults let NOT NULL columns join tables with rows (SQLite cannot alter a
    # column's nullability in place); the statements below then set the real values.
    op.add_column(
        "llm_router_conversations",
        sa.Column("updated_at", sa.Float(), nullable=False, server_default="0"),
    )
    op.add_column(
        "llm_router_conversations",
        sa.Column("message_count", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column("llm_router_conversations", sa.Column("deleted_at", sa.Float(), nullable=True))
    op.execute(
        "UPDATE llm_router_conversations SET updated_at = created_at, message_count = "
        "(SELECT COUNT(*) FROM llm_router_conversation_messages "
        "WHERE conversation_id = llm_router_conversations.id)"
    )
    op.create_index(
        "llm_router_conversations_by_activity",
        "llm_router_conversations",
        ["tenant_id", "updated_at"],
    )


def downgrade() -> None:
    # Deleted conversations had no row before 0002.
    op.execute(
        "DELETE FROM llm_router_conversation_messages WHERE conversation_id IN "
        "(SELECT id FROM llm_router_conversations WHERE deleted_at IS NOT NULL)"
    )
    op.execute("DELETE FROM llm_router_conversations WHERE deleted_at IS NOT NULL")
    op.drop_index("llm_router_conversations_by_activity", "llm_router_conversations")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a copied table would break the
    # messages' foreign key.
    for column in ("deleted_at", "message_count", "updated_at"):
        op.drop_column("llm_router_conversations", column)
