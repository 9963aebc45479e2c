"""The web client's committed OpenAPI copy (web/src/api/openapi.json) and the TypeScript types
generated from it (schema.d.ts) match the live gateway; `make web-schema` refreshes both."""

from __future__ import annotations

import json
import re
from pathlib import Path

from scripts import export_openapi

WEB_API = Path(export_openapi.ROOT) / "web" / "src" / "api"


def test_committed_schema_matches_the_live_gateway() -> None:
    assert export_openapi.main(["--check"]) == 0, "run `make web-schema` and commit the result"


def test_check_fails_on_a_stale_copy(tmp_path: Path) -> None:
    stale = json.loads(export_openapi.render(export_openapi.live_schema()))
    stale["paths"].pop("/v1/ask")
    out = tmp_path / "openapi.json"
    out.write_text(json.dumps(stale, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert export_openapi.main(["--check", "--out", str(out)]) == 1
    assert export_openapi.main(["--check", "--out", str(tmp_path / "missing.json")]) == 1


def test_export_writes_sorted_deterministic_json(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    assert export_openapi.main(["--out", str(out)]) == 0
    first = out.read_text(encoding="utf-8")
    assert export_openapi.main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == first
    assert first.endswith("}\n")
    assert export_openapi.main(["--check", "--out", str(out)]) == 0


def test_generated_types_cover_every_path_and_schema() -> None:
    """schema.d.ts (openapi-typescript output) was generated from the committed JSON."""
    schema = json.loads((WEB_API / "openapi.json").read_text(encoding="utf-8"))
    types = (WEB_API / "schema.d.ts").read_text(encoding="utf-8")
    paths = set(re.findall(r'^    "(/[^"]*)": \{', types, flags=re.MULTILINE))
    assert paths == set(schema["paths"]), "run `make web-schema` to regenerate schema.d.ts"
    for name in schema["components"]["schemas"]:
        assert re.search(rf"^        \"?{re.escape(name)}\"?: ", types, flags=re.MULTILINE), name
