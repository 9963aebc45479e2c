"""The fault suite's soak stage: a hook for `make soak` (issue 28 builds it). Until the
Makefile has a `soak` target this check skips with that reason; once it has, the suite runs
a short soak (AIMESH_SOAK_SECONDS, 60 s here) and fails when the soak fails."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.faults.conftest import say

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]


def test_short_soak() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    if not re.search(r"^soak:", makefile, re.MULTILINE):
        pytest.skip("no `make soak` target yet (issue 28): the soak stage is a hook")
    env = {**os.environ, "AIMESH_SOAK_SECONDS": os.environ.get("AIMESH_SOAK_SECONDS", "60")}
    result = subprocess.run(
        ["make", "--no-print-directory", "soak"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    say("soak", result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "(no output)")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
