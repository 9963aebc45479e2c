"""The conversation tables of the router before it had migrations (then named
``conversations`` and ``conversation_messages``, in a SQLite file).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "llm_router_conversations",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("collection", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "llm_router_conversation_messages",
        sa.Column(
            "conversation_id",
            sa.Text(),
            sa.ForeignKey("llm_router_conversations.id"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
    )
    op.create_index(
        "llm_router_conversations_by_owner",
        "llm_router_conversations",
        ["tenant_id", "user_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("llm_router_conversations_by_owner", "llm_router_conversations")
    op.drop_table("llm_router_conversation_messages")
    op.drop_table("llm_router_conversations")
