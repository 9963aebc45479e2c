"""The gateway app factory and its console entry point (``aimesh-gateway``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis

from aimesh_common.logging import configure_logging
from aimesh_common.settings import load_settings
from aimesh_gateway.api.deps import declare_bearer_security
from aimesh_gateway.api.main import routers
from aimesh_gateway.api.web import install_web_app
from aimesh_gateway.core.backends import Backends
from aimesh_gateway.core.cache import ResponseCache
from aimesh_gateway.core.config import Settings
from aimesh_gateway.core.conversations import ConversationLog
from aimesh_gateway.core.errors import install_exception_handlers
from aimesh_gateway.core.feedback import FeedbackStore
from aimesh_gateway.core.invalidation import Invalidations
from aimesh_gateway.core.keys import KeyStore
from aimesh_gateway.core.limits import tenant_limit_loader
from aimesh_gateway.core.metrics import HttpMetrics, UpstreamErrors
from aimesh_gateway.core.middleware import (
    REQUEST_ID_HEADER,
    BodyLimitMiddleware,
    RequestContextMiddleware,
    TimeoutMiddleware,
)
from aimesh_gateway.core.oidc import OidcVerifier
from aimesh_gateway.core.ratelimit import RateLimiter, TenantLimitSource
from aimesh_gateway.core.security import Authenticator
from aimesh_gateway.core.tracing import create_tracer_provider, instrument_app
from aimesh_gateway.core.usage import UsageMeter
from aimesh_gateway.core.users import UserStore
from aimesh_gateway.db.engine import create_engine, migrate, session_factory
from aimesh_gateway.schemas.problem import Problem

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
    """Build the app. The gRPC channels are created by its lifespan and closed after it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            engine = create_engine(settings.resolved_database_url())
            stack.push_async_callback(engine.dispose)
            if settings.migrate_on_start:
                await migrate(engine)
            sessions = session_factory(engine)
            app.state.db_sessions = sessions
            redis = None
            if settings.redis_url is not None:
                redis = Redis.from_url(
                    settings.redis_url.get_secret_value(),
                    socket_connect_timeout=0.5,
                    socket_timeout=0.5,
                )
                stack.push_async_callback(redis.aclose)
            app.state.redis = redis
            invalidations = Invalidations(redis, settings.redis_key_prefix)
            app.state.invalidations = invalidations
            stack.push_async_callback(invalidations.close)
            app.state.key_store = KeyStore(sessions, settings.api_key_cache_seconds, invalidations)
            app.state.user_store = UserStore(sessions, settings)
            app.state.tenant_limits = TenantLimitSource(
                tenant_limit_loader(sessions), invalidations
            )
            if settings.redis_url is not None:
                invalidations.start(settings.redis_url.get_secret_value())
            oidc = None
            if settings.oidc_issuer is not None:
                oidc = OidcVerifier(
                    settings.oidc_issuer,
                    settings.oidc_audience or settings.jwt_audience,
                    list(settings.oidc_algorithms),
                    settings.oidc_jwks_cache_seconds,
                    settings.oidc_leeway_seconds,
                )
                stack.push_async_callback(oidc.close)
            app.state.authenticator = Authenticator(settings, app.state.key_store, oidc)
            app.state.limiter = RateLimiter(
                settings, app.state.metrics, redis, app.state.tenant_limits
            )
            stack.push_async_callback(app.state.limiter.close)
            app.state.cache = ResponseCache(
                redis, settings.redis_key_prefix, settings.cache_ttl_seconds, app.state.metrics
            )
            app.state.usage = UsageMeter(sessions, app.state.limiter, app.state.metrics)
            stack.push_async_callback(app.state.usage.drain)
            app.state.feedback = FeedbackStore(sessions, app.state.usage)
            app.state.conversations = ConversationLog(sessions)
            stack.push_async_callback(app.state.conversations.drain)
            app.state.backends = Backends.connect(
                settings, UpstreamErrors(app.state.metrics.upstream_errors)
            )
            stack.push_async_callback(app.state.backends.close)
            # The embedding model's Info, cached by the routes (set here so that reading it
            # before the first call is a plain attribute, not a miss).
            app.state.embedding_info = None
            app.state.embedding_info_failed_at = None
            if app.state.tracer_provider is not None:
                stack.callback(app.state.tracer_provider.shutdown)
            yield

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
    if settings.web_dir is not None:
        install_web_app(app, settings.web_dir)

    # Added innermost first: the request context wraps everything, the body limit is inside.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(TimeoutMiddleware, seconds=settings.http_timeout_seconds)
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
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    app.state.tracer_provider = None
    if settings.otlp_endpoint is not None:
        app.state.tracer_provider = create_tracer_provider(settings.otlp_endpoint)
        instrument_app(app, app.state.tracer_provider)
    _customize_openapi(app)
    return app


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
