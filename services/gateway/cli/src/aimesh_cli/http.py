"""The gateway as the CLI's user commands see it: base URL and API key from flags or env."""

from __future__ import annotations

import argparse
import os
from typing import Any

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
        help="API key or JWT (default: env AIMESH_API_KEY; prefer the env, flags show in ps)",
    )


def _headers(args: argparse.Namespace) -> dict[str, str]:
    key = args.api_key or os.environ.get("AIMESH_API_KEY", "")
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
