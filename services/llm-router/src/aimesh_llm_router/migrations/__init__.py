"""The SQL conversation store's migrations (Alembic: env.py and versions/ beside this file).

Run when the router starts (``ConversationStore.start``, unless AIMESH_MIGRATE_ON_START is
false) and by ``make migrate`` (``python -m aimesh_llm_router.migrations``). The revision
is kept in ``alembic_version_llm_router`` and the tables carry the ``llm_router_`` prefix,
so they can share a PostgreSQL database with the other services' tables (the gateway has a
``conversations`` table of its own).

Before it had migrations the router created ``conversations`` and
``conversation_messages`` in its SQLite file with ``CREATE TABLE IF NOT EXISTS``; such a
database is adopted: its rows move, unchanged, into the tables of revision 0001 (the
prefixed names) and the old tables are dropped, in one transaction. (That code only wrote SQLite:
on PostgreSQL nothing is adopted.)
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from aimesh_common.db import Migrations, existing_tables

_BEFORE_MIGRATIONS = {
    "conversations": {"id", "tenant_id", "user_id", "model", "collection", "title", "created_at"},
    "conversation_messages": {"conversation_id", "position", "role", "content"},
}


def _adopt(connection: Connection, config: Config) -> str | None:
    """Move the rows of the code before migrations into the tables of 0001 (so the schema is
    exactly 0001's: SQLite let the old id be NULL and typed times REAL), then drop the old
    tables; the caller's transaction makes it all or nothing.

    That code only ever wrote SQLite files: on PostgreSQL a table named ``conversations``
    is the gateway's (a shared database), never the router's."""
    if connection.dialect.name != "sqlite" or not existing_tables(connection, _BEFORE_MIGRATIONS):
        return None
    command.upgrade(config, "0001")
    connection.execute(
        text(
            "INSERT INTO llm_router_conversations "
            "(id, tenant_id, user_id, model, collection, title, created_at) "
            "SELECT id, tenant_id, user_id, model, collection, title, created_at "
            "FROM conversations"
        )
    )
    connection.execute(
        text(
            "INSERT INTO llm_router_conversation_messages "
            "(conversation_id, position, role, content) "
            "SELECT conversation_id, position, role, content FROM conversation_messages"
        )
    )
    connection.execute(text("DROP TABLE conversation_messages"))
    connection.execute(text("DROP TABLE conversations"))  # and its index
    return "0001"


MIGRATIONS = Migrations(
    service="llm-router",
    script_location=Path(__file__).parent,
    version_table="alembic_version_llm_router",
    lock_id=0x61696D657368_03,
    adopt=_adopt,
)
