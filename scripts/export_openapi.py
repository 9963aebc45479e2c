"""Write the gateway's OpenAPI document to web/src/api/openapi.json (what the web client is
typed against), or with ``--check`` fail when the committed copy differs from the live one.

The app is built with default settings and never started: ``app.openapi()`` needs no
backends. The JSON is dumped with sorted keys and a trailing newline so it diffs cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "web" / "src" / "api" / "openapi.json"


def live_schema() -> dict[str, Any]:
    """The gateway's OpenAPI document as the running app would serve it."""
    from aimesh_gateway.core.config import Settings
    from aimesh_gateway.main import create_app

    return create_app(Settings(_env_file=None)).openapi()


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def difference(committed: str, live: str) -> str:
    """What changed, in a line or two (paths and schemas added or removed)."""
    try:
        old, new = json.loads(committed), json.loads(live)
    except json.JSONDecodeError:
        return "the committed copy is not valid JSON"
    notes = []
    for section, old_keys, new_keys in (
        ("paths", set(old.get("paths", {})), set(new["paths"])),
        (
            "schemas",
            set(old.get("components", {}).get("schemas", {})),
            set(new.get("components", {}).get("schemas", {})),
        ),
    ):
        if new_keys - old_keys:
            notes.append(f"{section} added: {', '.join(sorted(new_keys - old_keys))}")
        if old_keys - new_keys:
            notes.append(f"{section} removed: {', '.join(sorted(old_keys - new_keys))}")
    return "; ".join(notes) or "some operation or schema changed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    parser.add_argument(
        "--check", action="store_true", help="compare with --out instead of writing it"
    )
    args = parser.parse_args(argv)
    text = render(live_schema())
    out: Path = args.out
    if args.check:
        if not out.exists():
            print(f"{out} is missing: run `make web-schema`", file=sys.stderr)
            return 1
        committed = out.read_text(encoding="utf-8")
        if committed != text:
            print(
                f"{out} is stale ({difference(committed, text)}): run `make web-schema`",
                file=sys.stderr,
            )
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
