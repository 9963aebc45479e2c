"""Drop the gateway's copy of the conversation metadata: the LLM router owns it and serves
it to the tenant's admins (``ListTenantConversations``).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

# 0003 made the table; its own upgrade makes it again on the way down. Alembic loads these
# files by path, without a package: import 0003 by its full name (it starts with a digit).
_REVISION_0003 = importlib.import_module("aimesh_gateway.db.migrations.versions.0003_conversations")


def upgrade() -> None:
    op.drop_index("ix_conversations_tenant_subject", "conversations")
    op.drop_index("ix_conversations_tenant_updated", "conversations")
    op.drop_table("conversations")


def downgrade() -> None:
    """The table and indexes as 0003 made them, empty."""
    _REVISION_0003.upgrade()
