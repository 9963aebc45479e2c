"""The CLI's credentials: the flag, else AIMESH_API_KEY, else the dev key `make run` keeps,
which is sent to a gateway on this machine only."""

from __future__ import annotations

import argparse
from pathlib import Path

from aimesh_cli.http import api_key, dev_key


def _args(url: str, key: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(url=url, api_key=key)


def test_the_dev_key_is_read_for_a_local_gateway_only(tmp_path: Path) -> None:
    (tmp_path / ".aimesh").mkdir()
    (tmp_path / ".aimesh" / "dev-admin-api-key").write_text("am_dev_abc\n")
    for url in ("http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000"):
        assert dev_key(url, {}, cwd=tmp_path) == "am_dev_abc"
    assert dev_key("https://aimesh.example.com", {}, cwd=tmp_path) == ""
    assert dev_key("http://localhost:8000", {}, cwd=tmp_path / "elsewhere") == ""


def test_the_data_dir_comes_from_aimesh_data_dir(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dev-admin-api-key").write_text("am_dev_xyz\n")
    environ = {"AIMESH_DATA_DIR": str(tmp_path / "data")}
    assert dev_key("http://localhost:8000", environ) == "am_dev_xyz"


def test_the_flag_and_the_env_come_first(tmp_path: Path) -> None:
    (tmp_path / "dev-admin-api-key").write_text("am_dev_file\n")
    environ = {"AIMESH_DATA_DIR": str(tmp_path)}
    local = "http://localhost:8000"
    assert api_key(_args(local), environ) == "am_dev_file"
    assert api_key(_args(local), {**environ, "AIMESH_API_KEY": "am_env"}) == "am_env"
    assert api_key(_args(local, "am_flag"), {**environ, "AIMESH_API_KEY": "am_env"}) == "am_flag"
    assert api_key(_args("https://remote.example"), environ) == ""
