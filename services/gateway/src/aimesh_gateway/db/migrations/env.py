"""Alembic environment: runs on the connection handed over by ``aimesh_gateway.db.engine``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from aimesh_gateway.db.models import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through aimesh_gateway.db.engine.migrate (make migrate)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
