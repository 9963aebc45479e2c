"""OpenAI's files and vector-store APIs: uploaded files (their bytes apart), what a vector
store adds to its collection, and the files added to vector stores.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from aimesh_gateway.db.models import UtcDateTime

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_files_tenant_time", "files", ["tenant_id", "created_at"])
    op.create_table(
        "file_contents",
        sa.Column(
            "file_id",
            sa.String(64),
            sa.ForeignKey("files.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("content", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "vector_stores",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False, server_default=""),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("metadata_json", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "vector_store_files",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("vector_store_id", sa.String(64), primary_key=True),
        sa.Column("file_id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("batch_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(32), nullable=False, server_default=""),
        sa.Column("error_message", sa.Text(), nullable=False, server_default=""),
        sa.Column("usage_bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("attributes_json", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("document_ids_json", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('in_progress', 'completed', 'failed', 'cancelled')",
            name="ck_vector_store_files_status",
        ),
    )
    op.create_index(
        "ix_vector_store_files_store",
        "vector_store_files",
        ["tenant_id", "vector_store_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_vector_store_files_store", "vector_store_files")
    op.drop_table("vector_store_files")
    op.drop_table("vector_stores")
    op.drop_table("file_contents")
    op.drop_index("ix_files_tenant_time", "files")
    op.drop_table("files")
