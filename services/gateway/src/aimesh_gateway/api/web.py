"""The built web app (``AIMESH_WEB_DIR``) served at ``/``, behind every API route.

It is installed as the router's fallback, which runs only when no route matched the path at
all: API routes, their 405s, the docs, the OpenAPI document and the probes always win. A GET
or HEAD of a file in the folder serves it; any other GET outside the API paths serves
``index.html`` (the Vue router resolves it in the browser). Paths under ``/v1/`` and the
reserved ones keep answering 404 problems.

Vite names the files under ``assets/`` by their content hash, so they are cached for a year;
``index.html`` and the other files are revalidated on every load (``no-cache``), so a deploy
is picked up at once.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# Never served from the web folder, even when no route matched (unknown API paths stay 404).
RESERVED_PREFIXES = ("/v1/", "/docs/", "/redoc/")
RESERVED_PATHS = frozenset(
    {"/v1", "/docs", "/redoc", "/openapi.json", "/healthz", "/readyz", "/metrics"}
)
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# The app loads its own scripts and styles and talks only to this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def is_reserved(path: str) -> bool:
    return path in RESERVED_PATHS or path.startswith(RESERVED_PREFIXES)


class WebApp:
    """ASGI fallback: a file of ``root``, ``index.html`` for app routes, else ``not_found``."""

    def __init__(self, root: Path, not_found: ASGIApp) -> None:
        self.root = root.resolve()
        self.index = self.root / "index.html"
        self.not_found = not_found

    def _file(self, path: str) -> Path | None:
        """The file ``path`` names inside the root; None for a folder, a missing file or an
        escape (``..``, symlinks out of the root)."""
        relative = path.lstrip("/")
        if not relative or "\x00" in relative:
            return None
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    @staticmethod
    def _response(file: Path, path: str) -> FileResponse:
        cache = IMMUTABLE if path.startswith("/assets/") else REVALIDATE
        return FileResponse(
            file,
            headers={"Cache-Control": cache, "Content-Security-Policy": CONTENT_SECURITY_POLICY},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", "/"))
        if (
            scope["type"] != "http"
            or scope.get("method") not in ("GET", "HEAD")
            or is_reserved(path)
        ):
            await self.not_found(scope, receive, send)
            return
        file = self._file(path)
        if file is None:
            if path.startswith("/assets/"):  # a stale hashed asset: never HTML in its place
                await self.not_found(scope, receive, send)
                return
            file = self.index
            path = "/index.html"
        await self._response(file, path)(scope, receive, send)


def install_web_app(app: FastAPI, root: Path) -> None:
    """Serve ``root`` behind every route of ``app`` (see the module docstring)."""
    app.router.default = WebApp(root, app.router.default)
