"""A bad-input barrage over every route of the live OpenAPI document (issue 19 §3): path-like
and odd ids in every path parameter, malformed, huge, deep and odd-unicode JSON bodies, a
wrong type for every property of every request schema, and corrupt files of each supported
type. Nothing may answer 500 (or any 5xx: the backends are up)."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections import Counter
from typing import Any

import httpx
import pytest

from scripts.devmesh import Mesh
from tests.faults.conftest import say

pytestmark = pytest.mark.faults

PATH_VALUES = [
    "../../etc/passwd",
    "..",
    "%2e%2e%2f",
    "a/b",
    "x" * 3000,
    "\x00",
    "\u202e\u200bkb",
    "😀",
    "CON",
    " ",
    "-1",
    "9" * 40,
    "$where",
    "kb'; DROP TABLE keys;--",
]
RAW_BODIES = [
    b"{",
    b"[]",
    b"null",
    b"1e999999",
    b'{"a": NaN}',
    b'"\\ud800"',
    b"\xff\xfe\x00",
    b"\xef\xbb\xbf{}",
    b"[" * 50_000 + b"]" * 50_000,
    b'{"x": "' + b"y" * 3_000_000 + b'"}',
    b'{"n": ' + b"9" * 5000 + b"}",
]
WRONG_VALUES: list[Any] = [
    None,
    True,
    -1,
    2**70,
    1.5e308,
    "",
    "\ud800",
    "x" * 100_000,
    [],
    {},
    {"$and": [{"$and": [{"$and": []}]}]},
]
CORRUPT_FILES = [
    ("bad.txt", b"caf\xe9 \x00\xff"),
    ("bad.md", b"\xc3\x28" * 10),
    ("bad.html", b"<html><body><p>" + b"<b>" * 100_000),
    ("bad.pdf", b"%PDF-1.7\n1 0 obj << /Length 99999999 >> stream\n\x00\x01"),
    ("bad.docx", b"PK\x03\x04" + b"\x00" * 200),
    ("bad.csv", b'a,b\n"unterminated,\x00\n'),
    ("bad.json", b'{"text": '),
    ("../../etc/passwd.txt", b"path-like name"),
    ("", b"no name"),
    ("noext", b"no extension"),
]


def _sample(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A minimal valid-looking object for a request schema (required properties filled)."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    body: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        if name not in schema.get("required", []):
            continue
        kind = prop.get("type") or next(
            (p.get("type") for p in prop.get("anyOf", []) if p.get("type")), "string"
        )
        body[name] = {"string": "text", "integer": 1, "number": 1, "boolean": True}.get(
            kind, [] if kind == "array" else {}
        )
    return body


def _cases(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    components = spec.get("components", {}).get("schemas", {})
    cases: list[tuple[str, str, dict[str, Any]]] = []
    for template, methods in spec["paths"].items():
        for method, operation in methods.items():
            params = re.findall(r"{(\w+)}", template)
            good = dict.fromkeys(params, "kb")
            if "job_id" in good:
                good["job_id"] = "0" * 32
            content = operation.get("requestBody", {}).get("content", {})
            for param in params:
                for value in PATH_VALUES:
                    values = {**good, param: urllib.parse.quote(value, safe="")}
                    cases.append((method, template.format(**values), {}))
            path = template.format(**good)
            if "application/json" in content:
                schema = content["application/json"]["schema"]
                for raw in RAW_BODIES:
                    cases.append((method, path, {"content": raw}))
                sample = _sample(schema, components)
                ref = schema.get("$ref", "")
                resolved = components.get(ref.rsplit("/", 1)[-1], schema)
                for name in resolved.get("properties", {}):
                    for value in WRONG_VALUES:
                        body = json.dumps({**sample, name: value}, allow_nan=True)
                        cases.append((method, path, {"content": body.encode()}))
                cases.append(
                    (method, path, {"content": json.dumps({**sample, "unknown_field": 1})})
                )
            if "multipart/form-data" in content:
                for name, data in CORRUPT_FILES:
                    cases.append((method, path, {"files": [("files", (name, data))]}))
                cases.append((method, path, {"data": {"metadata": "{"}, "files": []}))
            if not params and not content:
                cases.append((method, path + "?" + "q=" + "%ff" * 100, {}))
    return cases


def test_no_input_makes_a_5xx(mesh: Mesh) -> None:
    headers = {"Authorization": f"Bearer {mesh.admin_api_key}"}
    with httpx.Client(base_url=mesh.url, timeout=60) as client:
        spec = client.get("/openapi.json").json()
        cases = _cases(spec)
        statuses: Counter[int] = Counter()
        failures: list[str] = []
        started = time.monotonic()
        for method, path, kwargs in cases:
            extra = {"content-type": "application/json"} if "content" in kwargs else {}
            response = client.request(method.upper(), path, headers={**headers, **extra}, **kwargs)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(
                    f"{method.upper()} {path[:120]} -> {response.status_code} "
                    f"(sent {str(kwargs)[:300]}; answered {response.text[:300]})"
                )
    say(
        "bad-input barrage",
        f"{len(cases)} requests over {len(spec['paths'])} paths in "
        f"{time.monotonic() - started:.0f} s: statuses {dict(sorted(statuses.items()))}",
    )
    assert len(cases) > 300
    assert failures == []
