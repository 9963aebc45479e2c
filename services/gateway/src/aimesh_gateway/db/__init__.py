"""Persistence of the gateway: API keys, users, refresh tokens, limits, usage, feedback,
budgets, and the files and vector stores of the OpenAI-compatible files API.

Also the metadata of conversations (owner, size, last activity); their messages stay in
the LLM router.

SQLAlchemy 2 (async) on SQLite by default (a file under ``AIMESH_DATA_DIR``) or PostgreSQL
(``AIMESH_DATABASE_URL=postgresql+asyncpg://...``). The schema is owned by the Alembic
migrations in ``migrations/``, applied at start and by ``make migrate``.
"""
