"""The built web app holds no secrets: the scanner (web/e2e/check-bundle.mjs, also run by
`make web-test`) passes on web/dist and fails on planted key-like strings."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.web.conftest import DIST, WEB, build_problem, node_problem

SCANNER = WEB / "e2e" / "check-bundle.mjs"

# Assembled at run time so this file itself holds no key-like literal.
PLANTED = {
    "openai": "const k = 'sk-" + "proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2'",
    "aimesh": "headers: {Authorization: 'Bearer am_" + "abcd1234_" + "Zx9Yw8Vu7Ts6Rq5Po4'}",
    "private key": "-----BEGIN " + "PRIVATE KEY-----\nMIIE...",
    "jwt": "t='eyJ" + "hbGciOiJIUzI1NiJ9.eyJ" + "zdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlMTIzNDU2'",
}


@pytest.fixture(autouse=True)
def _need_node() -> None:
    problem = node_problem()
    if problem:
        pytest.skip(problem)


def scan(folder: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(SCANNER), str(folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )


def test_built_assets_have_no_secrets() -> None:
    problem = build_problem()
    if problem:
        pytest.skip(problem)
    result = scan(DIST)
    assert result.returncode == 0, result.stderr
    assert "nothing that looks like a secret" in result.stdout


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_scanner_finds_a_planted_secret(tmp_path: Path, kind: str) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "index-abc.js").write_text(f"let a=1;{PLANTED[kind]};let b=2;")
    result = scan(tmp_path)
    assert result.returncode == 1
    assert "index-abc.js" in result.stderr


def test_scanner_finds_the_value_of_a_secret_variable(tmp_path: Path) -> None:
    import os

    secret = "an-admin-key-value-1234"
    (tmp_path / "index.html").write_text(f"<script>window.k='{secret}'</script>")
    result = scan(tmp_path, env={**os.environ, "AIMESH_ADMIN_API_KEY": secret})
    assert result.returncode == 1
    assert "value of AIMESH_ADMIN_API_KEY" in result.stderr
    assert secret not in result.stderr
