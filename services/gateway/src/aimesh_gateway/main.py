"""The gateway app factory and its console entry point (``aimesh-gateway``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from aimesh_common.logging import configure_logging
from aimesh_common.settings import load_settings
from aimesh_gateway.api.main import routers
from aimesh_gateway.core.backends import Backends
from aimesh_gateway.core.config import Settings
from aimesh_gateway.core.errors import install_exception_handlers
from aimesh_gateway.core.metrics import HttpMetrics
from aimesh_gateway.core.middleware import (
    REQUEST_ID_HEADER,
    BodyLimitMiddleware,
    RequestContextMiddleware,
    RequestIdLogFilter,
)
from aimesh_gateway.schemas.problem import Problem

log = logging.getLogger("aimesh.gateway")

DESCRIPTION = """\
The aimesh REST API. Every route under `/v1` takes `Authorization: Bearer <API key or JWT>`;
errors are RFC 9457 problems (`application/problem+json`). `/v1/chat/completions` and
`/v1/models` speak the OpenAI protocol: point an OpenAI client's base URL at `<host>/v1`.
"""


def create_app(settings: Settings) -> FastAPI:
    """Build the app. The gRPC channels are created by its lifespan and closed after it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backends = Backends.connect(settings)
        try:
            yield
        finally:
            await app.state.backends.close()

    app = FastAPI(
        title="aimesh gateway",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = HttpMetrics()
    install_exception_handlers(app)
    for router in routers:
        app.include_router(router)

    # Added innermost first: the request context wraps everything, the body limit is inside.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,  # bearer tokens, never cookies: no credentialed CORS
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER],
        )
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    _register_problem_schema(app)
    return app


def _register_problem_schema(app: FastAPI) -> None:
    """Make sure ``#/components/schemas/Problem`` exists for the error responses' $refs."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = original()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(problem.pop("$defs", {}))
            schemas["Problem"] = problem
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def main() -> None:
    settings = load_settings(Settings)
    configure_logging("gateway", settings.log_level, settings.log_format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdLogFilter())
    log.info("starting", extra={"host": settings.host, "port": settings.port})
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep the JSON logging configured above
        access_log=False,  # the request middleware writes the access log
        timeout_graceful_shutdown=int(settings.grace_seconds),
        server_header=False,
    )


if __name__ == "__main__":
    main()
