"""The ``aimesh`` command line: the parser skeleton and ``aimesh keys`` on a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aimesh_gateway.cli.main import build_parser, main

AIMESH = Path(sys.executable).parent / "aimesh"


def test_without_a_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: aimesh" in capsys.readouterr().err


def test_keys_group_is_registered() -> None:
    help_text = build_parser().format_help()
    assert "keys" in help_text


def _aimesh(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIMESH_DATA_DIR": str(data_dir)}
    env.pop("AIMESH_DATABASE_URL", None)
    return subprocess.run(
        [str(AIMESH), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow
def test_keys_create_list_revoke(tmp_path: Path) -> None:
    created = _aimesh(tmp_path, "keys", "create", "--tenant", "acme", "--role", "editor")
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    assert record["key"].startswith(f"am_{record['prefix']}_")
    assert record["roles"] == ["editor"]
    assert "not shown again" in created.stderr

    listed = _aimesh(tmp_path, "keys", "list", "--tenant", "acme")
    assert listed.returncode == 0
    [info] = json.loads(listed.stdout)
    assert info["id"] == record["id"]
    assert record["key"] not in listed.stdout

    assert _aimesh(tmp_path, "keys", "revoke", "--tenant", "other", record["id"]).returncode == 1
    revoked = _aimesh(tmp_path, "keys", "revoke", "--tenant", "acme", record["id"])
    assert revoked.returncode == 0
    assert json.loads(revoked.stdout)["revoked_at"] is not None

    bad = _aimesh(tmp_path, "keys", "create", "--tenant", "../x", "--role", "user")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
