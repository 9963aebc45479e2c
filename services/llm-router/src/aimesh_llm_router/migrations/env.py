"""Alembic environment of the conversation store: runs on the connection aimesh_common.db
hands over."""

from aimesh_common.db import run_migrations
from aimesh_llm_router.conversations import Base

run_migrations(Base.metadata)
