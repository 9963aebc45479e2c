"""The ingestion job store's migrations (Alembic: env.py and versions/ beside this file).

Run at start-up by ``JobStore.open`` and by ``make migrate`` (``python -m
aimesh_retrieval.migrations``). The revision is kept in ``alembic_version_retrieval``, so
the job tables can share a PostgreSQL database with the other services' tables.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import Connection

from aimesh_common.db import Migrations, existing_tables

# The tables as the service created them before it had migrations (``create_all``): the
# schema of revision 0001.
_BEFORE_MIGRATIONS = {
    "retrieval_ingest_jobs": {
        "id",
        "tenant_id",
        "collection",
        "state",
        "documents_total",
        "documents_done",
        "chunks_total",
        "chunks_embedded",
        "errors",
        "attempts",
        "owner",
        "lease_until",
        "created_at",
        "updated_at",
    },
    "retrieval_ingest_job_documents": {
        "job_id",
        "seq",
        "document_id",
        "text",
        "metadata_json",
        "chunks",
        "done",
    },
}


def _adopt(connection: Connection, _config: Config) -> str | None:
    """A job database created by ``create_all`` is at 0001 as it is."""
    return "0001" if existing_tables(connection, _BEFORE_MIGRATIONS) else None


MIGRATIONS = Migrations(
    service="retrieval",
    script_location=Path(__file__).parent,
    version_table="alembic_version_retrieval",
    lock_id=0x61696D657368_02,
    adopt=_adopt,
)
