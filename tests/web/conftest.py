"""What the web tests need: Node.js (>= 20.19) with the web app's packages, and its build."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
DIST = WEB / "dist"
ARTIFACTS = ROOT / "tests" / "artifacts" / "web"


def node_problem() -> str | None:
    """Why the Node side cannot run here, or None when it can."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed (the web tests need Node.js >= 20.19)"
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    major, minor = (int(part) for part in version.lstrip("v").split(".")[:2])
    if (major, minor) < (20, 19):
        return f"node {version} is too old (the web tests need Node.js >= 20.19)"
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        return "web/node_modules is missing: run `make web-test` (npm ci) first"
    return None


def build_problem() -> str | None:
    if not (DIST / "index.html").is_file():
        return "web/dist is not built: run `make web` or `make web-test` first"
    return None
