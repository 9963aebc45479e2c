"""The gateway as the CLI's user commands see it: base URL and API key from flags or env."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

DEFAULT_URL = "http://localhost:8000"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("AIMESH_URL", DEFAULT_URL),
        help=f"Gateway base URL (env AIMESH_URL, default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=(
            "API key or JWT (default: env AIMESH_API_KEY, else for a gateway on this machine "
            "the dev key `make run` keeps in $AIMESH_DATA_DIR/dev-admin-api-key, .aimesh by "
            "default; prefer the env, flags show in ps)"
        ),
    )


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
DEV_KEY_FILE = "dev-admin-api-key"


def dev_key(url: str, environ: Mapping[str, str], cwd: Path | None = None) -> str:
    """The dev API key `make run` wrote, for a gateway on this machine only (it is never
    sent elsewhere); "" when there is none."""
    if urlsplit(url).hostname not in LOOPBACK_HOSTS:
        return ""
    data_dir = Path(environ.get("AIMESH_DATA_DIR", ".aimesh"))
    if not data_dir.is_absolute():
        data_dir = (cwd or Path.cwd()) / data_dir
    try:
        return (data_dir / DEV_KEY_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def api_key(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> str:
    """The key to send: the flag, else AIMESH_API_KEY, else the local dev key."""
    return args.api_key or environ.get("AIMESH_API_KEY", "") or dev_key(args.url, environ)


def _headers(args: argparse.Namespace) -> dict[str, str]:
    key = api_key(args)
    return {"Authorization": f"Bearer {key}"} if key else {}


def client(args: argparse.Namespace, timeout: float = 120.0) -> httpx.Client:
    return httpx.Client(base_url=args.url.rstrip("/"), headers=_headers(args), timeout=timeout)


def async_client(
    args: argparse.Namespace, timeout: float = 120.0, connections: int = 10
) -> httpx.AsyncClient:
    """The async counterpart of :func:`client`, for commands that send requests concurrently."""
    return httpx.AsyncClient(
        base_url=args.url.rstrip("/"),
        headers=_headers(args),
        timeout=timeout,
        limits=httpx.Limits(max_connections=connections),
    )


def problem(response: httpx.Response) -> str:
    """The readable reason of an error response (problem+json detail, else the body)."""
    try:
        body: Any = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    if isinstance(body, dict) and body.get("detail"):
        return f"HTTP {response.status_code}: {body['detail']}"
    return f"HTTP {response.status_code}: {response.text[:300]}"
