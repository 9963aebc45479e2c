"""Persistence of the gateway: API keys, local users, refresh tokens, limits and usage.

SQLAlchemy 2 (async) on SQLite by default (a file under ``AIMESH_DATA_DIR``) or PostgreSQL
(``AIMESH_DATABASE_URL=postgresql+asyncpg://...``). The schema is owned by the Alembic
migrations in ``migrations/``, applied at start and by ``make migrate``.
"""
