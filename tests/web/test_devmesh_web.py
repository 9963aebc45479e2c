"""`make run` (scripts/devmesh.py) serves the web app when it is built."""

from __future__ import annotations

from pathlib import Path

from scripts.devmesh import web_dir_setting, web_note


def test_web_dir_is_the_build_once_it_exists(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    assert web_dir_setting({}, dist) is None
    dist.mkdir()
    assert web_dir_setting({}, dist) is None
    (dist / "index.html").write_text("<!doctype html>")
    assert web_dir_setting({}, dist) == str(dist)


def test_an_explicit_web_dir_wins(tmp_path: Path) -> None:
    assert web_dir_setting({"AIMESH_WEB_DIR": "/srv/web"}, tmp_path) == "/srv/web"


def test_the_banner_says_how_to_get_the_web_app() -> None:
    assert "make web" in web_note("http://127.0.0.1:8000", None)
    assert web_note("http://127.0.0.1:8000", "/x/dist").startswith("http://127.0.0.1:8000/")
