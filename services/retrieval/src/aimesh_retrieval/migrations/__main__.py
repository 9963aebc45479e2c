"""``python -m aimesh_retrieval.migrations`` (part of ``make migrate``): migrate the job
store named by the settings (AIMESH_JOBS_DATABASE_URL, else SQLite in AIMESH_DATA_DIR)."""

from __future__ import annotations

from aimesh_common.db import migrate_command
from aimesh_common.logging import configure_logging
from aimesh_common.settings import load_settings
from aimesh_retrieval.config import Settings
from aimesh_retrieval.migrations import MIGRATIONS

settings = load_settings(Settings)
configure_logging("retrieval", settings.log_level, settings.log_format)
if not settings.jobs_database_url:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
migrate_command(settings.resolved_jobs_database_url, MIGRATIONS)
