"""``aimesh-gateway-manage``: ``keys`` and ``migrate`` on a real database (SQLite file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aimesh_gateway.manage import build_parser
from tests.gateway.db.test_db import HEAD


def test_without_a_command_it_fails_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([])
    assert exit_info.value.code == 2
    assert "usage: aimesh-gateway-manage" in capsys.readouterr().err


def _manage(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIMESH_DATA_DIR": str(data_dir)}
    env.pop("AIMESH_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "aimesh_gateway.manage", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_keys_create_list_revoke(tmp_path: Path) -> None:
    created = _manage(tmp_path, "keys", "create", "--tenant", "acme", "--role", "editor")
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    assert record["key"].startswith(f"am_{record['prefix']}_")
    assert record["roles"] == ["editor"]
    assert "not shown again" in created.stderr

    listed = _manage(tmp_path, "keys", "list", "--tenant", "acme")
    assert listed.returncode == 0
    [info] = json.loads(listed.stdout)
    assert info["id"] == record["id"]
    assert record["key"] not in listed.stdout

    assert _manage(tmp_path, "keys", "revoke", "--tenant", "other", record["id"]).returncode == 1
    revoked = _manage(tmp_path, "keys", "revoke", "--tenant", "acme", record["id"])
    assert revoked.returncode == 0
    assert json.loads(revoked.stdout)["revoked_at"] is not None

    bad = _manage(tmp_path, "keys", "create", "--tenant", "../x", "--role", "user")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_migrate_brings_the_database_to_the_head_revision(tmp_path: Path) -> None:
    migrated = _manage(tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert f"database at revision {HEAD}" in migrated.stdout
    assert (tmp_path / "gateway.db").is_file()
    again = _manage(tmp_path, "migrate")  # idempotent
    assert again.returncode == 0, again.stderr
