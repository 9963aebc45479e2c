"""The gateway app factory and its console entry point (``aimesh-gateway``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from aimesh_common.logging import configure_logging
from aimesh_common.settings import load_settings
from aimesh_gateway.api.deps import declare_bearer_security
from aimesh_gateway.api.main import routers
from aimesh_gateway.api.web import install_web_app
from aimesh_gateway.core.config import Settings
from aimesh_gateway.core.errors import install_exception_handlers
from aimesh_gateway.limits.http import (
    BodyLimitMiddleware,
    CancelOnDisconnectMiddleware,
    TimeoutMiddleware,
)
from aimesh_gateway.observability.metrics import HttpMetrics
from aimesh_gateway.observability.middleware import REQUEST_ID_HEADER, RequestContextMiddleware
from aimesh_gateway.observability.tracing import create_tracer_provider, instrument_app
from aimesh_gateway.schemas.problem import Problem
from aimesh_gateway.state import open_state

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("aimesh.gateway")

# Sent by the `openai` npm package on every call, also from a browser: without them in the
# CORS allow-list its preflight fails (docs/migrating-from-direct-openai.md).
OPENAI_SDK_HEADERS = (
    "X-Stainless-Arch",
    "X-Stainless-Lang",
    "X-Stainless-OS",
    "X-Stainless-Package-Version",
    "X-Stainless-Retry-Count",
    "X-Stainless-Runtime",
    "X-Stainless-Runtime-Version",
    "X-Stainless-Timeout",
)

DESCRIPTION = """\
The aimesh REST API. Every route under `/v1` takes `Authorization: Bearer <API key or JWT>`;
errors are RFC 9457 problems (`application/problem+json`). `/v1/chat/completions` and
`/v1/models` speak the OpenAI protocol: point an OpenAI client's base URL at `<host>/v1`.
"""


def create_app(settings: Settings) -> FastAPI:
    """Build the app. Its lifespan opens the state (database, Redis, gRPC channels) and
    closes it after."""
    metrics = HttpMetrics()
    tracer_provider = (
        None if settings.otlp_endpoint is None else create_tracer_provider(settings.otlp_endpoint)
    )
    app = FastAPI(
        title="aimesh gateway",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=_lifespan(settings, metrics, tracer_provider),
    )
    install_exception_handlers(app)
    _include_routers(app, settings)
    _add_middleware(app, settings, metrics, tracer_provider)
    _customize_openapi(app)
    return app


def _lifespan(
    settings: Settings, metrics: HttpMetrics, tracer_provider: TracerProvider | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.gateway = await open_state(settings, metrics, tracer_provider, stack)
            yield

    return lifespan


def _include_routers(app: FastAPI, settings: Settings) -> None:
    for router in routers:
        app.include_router(router)
    if settings.web_dir is not None:
        install_web_app(app, settings.web_dir)


def _add_middleware(
    app: FastAPI,
    settings: Settings,
    metrics: HttpMetrics,
    tracer_provider: TracerProvider | None,
) -> None:
    # Added innermost first: the request context wraps everything, the body limit is inside.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(TimeoutMiddleware, seconds=settings.http_timeout_seconds)
    app.add_middleware(CancelOnDisconnectMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,  # bearer tokens, never cookies: no credentialed CORS
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER, *OPENAI_SDK_HEADERS],
            # A browser app reads these: the id to rate an answer (POST /v1/feedback), the
            # limits and Retry-After to back off.
            expose_headers=[
                REQUEST_ID_HEADER,
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "Retry-After",
            ],
        )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    if tracer_provider is not None:
        # Added last, so the span covers everything, including the request context.
        instrument_app(app, tracer_provider)


def _customize_openapi(app: FastAPI) -> None:
    """Make sure ``#/components/schemas/Problem`` exists for the error responses' $refs, and
    declare the bearer scheme on the operations that authenticate."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = original()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(problem.pop("$defs", {}))
            schemas["Problem"] = problem
            declare_bearer_security(app, schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _configure_logging(settings: Settings) -> None:
    # Records made while a request is handled carry its id (configure_logging's filter).
    configure_logging("gateway", settings.log_level, settings.log_format)


def app_from_env() -> FastAPI:
    """The app factory each uvicorn worker process calls (settings from the environment)."""
    settings = load_settings(Settings)
    _configure_logging(settings)
    return create_app(settings)


def main() -> None:
    settings = load_settings(Settings)
    _configure_logging(settings)
    workers = settings.resolved_workers()
    log.info("starting", extra={"host": settings.host, "port": settings.port, "workers": workers})
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,  # keep the JSON logging configured above
        "access_log": False,  # the request middleware writes the access log
        "timeout_graceful_shutdown": int(settings.grace_seconds),
        "timeout_keep_alive": settings.keep_alive_seconds,
        "server_header": False,
    }
    if workers > 1:
        # A worker imports the whole app before it answers the supervisor's ping; on a busy
        # node that takes longer than uvicorn's 5 s default, and it would be killed in a loop.
        options["timeout_worker_healthcheck"] = 60
        uvicorn.run("aimesh_gateway.main:app_from_env", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)


if __name__ == "__main__":
    main()
