"""``python -m aimesh_llm_router.migrations`` (part of ``make migrate``): migrate the
conversation store named by the settings (AIMESH_CONVERSATIONS_DATABASE_URL, else SQLite in
AIMESH_DATA_DIR); nothing to do when the conversations are in Redis (AIMESH_REDIS_URL)."""

from __future__ import annotations

from aimesh_common.db import migrate_command
from aimesh_common.logging import configure_logging
from aimesh_common.settings import load_settings
from aimesh_llm_router.config import Settings
from aimesh_llm_router.migrations import MIGRATIONS

settings = load_settings(Settings)
configure_logging("llm-router", settings.log_level, settings.log_format)
if settings.redis_url is not None:
    print("llm-router: conversations are kept in Redis (AIMESH_REDIS_URL): nothing to migrate")
else:
    migrate_command(settings.resolved_conversations_database_url, MIGRATIONS)
