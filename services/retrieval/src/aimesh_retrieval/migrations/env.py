"""Alembic environment of the job store: runs on the connection aimesh_common.db hands over."""

from aimesh_common.db import run_migrations
from aimesh_retrieval.jobs import Base

run_migrations(Base.metadata)
