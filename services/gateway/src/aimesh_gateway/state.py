"""The gateway's state: one typed object built by the app's lifespan, read by the routes
through the dependencies of ``api/deps.py``."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.auth.keys import KeyStore
from aimesh_gateway.auth.oidc import OidcVerifier
from aimesh_gateway.auth.security import Authenticator
from aimesh_gateway.auth.users import UserStore
from aimesh_gateway.core.backends import Backends
from aimesh_gateway.core.config import Settings
from aimesh_gateway.core.embedding_info import EmbeddingInfoCache
from aimesh_gateway.core.invalidation import Invalidations
from aimesh_gateway.db.engine import create_engine, migrate, session_factory
from aimesh_gateway.limits.budgets import BudgetList, Budgets, PriceBook
from aimesh_gateway.limits.ratelimit import RateLimiter, TenantLimitSource
from aimesh_gateway.limits.tenants import tenant_limit_loader
from aimesh_gateway.observability.metrics import HttpMetrics, UpstreamErrors
from aimesh_gateway.stores.cache import ResponseCache
from aimesh_gateway.stores.feedback import FeedbackStore
from aimesh_gateway.stores.files import FileStore
from aimesh_gateway.stores.usage import UsageMeter, UsageRetention
from aimesh_gateway.stores.vector_stores import VectorStoreRecords

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


@dataclass(frozen=True)
class GatewayState:
    """Everything the routes share, created once per app (and process) by its lifespan."""

    settings: Settings
    metrics: HttpMetrics
    tracer_provider: TracerProvider | None
    db_sessions: async_sessionmaker[AsyncSession]
    redis: Redis | None
    invalidations: Invalidations
    key_store: KeyStore
    user_store: UserStore
    tenant_limits: TenantLimitSource
    authenticator: Authenticator
    limiter: RateLimiter
    cache: ResponseCache
    usage: UsageMeter
    feedback: FeedbackStore
    backends: Backends
    budgets: Budgets
    files: FileStore
    vector_stores: VectorStoreRecords
    embedding_info: EmbeddingInfoCache = field(default_factory=EmbeddingInfoCache)


async def open_state(
    settings: Settings,
    metrics: HttpMetrics,
    tracer_provider: TracerProvider | None,
    stack: AsyncExitStack,
) -> GatewayState:
    """Connect the database, Redis, the stores and the gRPC backends; ``stack`` closes them
    (in the reverse order) when the app stops."""
    engine = create_engine(settings.resolved_database_url())
    stack.push_async_callback(engine.dispose)
    if settings.migrate_on_start:
        await migrate(engine)
    sessions = session_factory(engine)
    redis = None
    if settings.redis_url is not None:
        redis = Redis.from_url(
            settings.redis_url.get_secret_value(),
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
        )
        stack.push_async_callback(redis.aclose)
    invalidations = Invalidations(redis, settings.redis_key_prefix)
    stack.push_async_callback(invalidations.close)
    key_store = KeyStore(sessions, settings.api_key_cache_seconds, invalidations)
    user_store = UserStore(sessions, settings)
    tenant_limits = TenantLimitSource(tenant_limit_loader(sessions), invalidations)
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
    authenticator = Authenticator(settings, key_store, oidc)
    limiter = RateLimiter(settings, metrics, redis, tenant_limits)
    stack.push_async_callback(limiter.close)
    cache = ResponseCache(
        redis,
        settings.redis_key_prefix,
        settings.cache_ttl_seconds,
        metrics,
        max_bytes=settings.cache_max_bytes,
        max_entry_bytes=settings.cache_max_entry_bytes,
    )
    usage = UsageMeter(sessions, limiter, metrics)
    stack.push_async_callback(usage.drain)
    retention = UsageRetention(usage, settings.usage_retention_days)
    retention.start()
    stack.push_async_callback(retention.close)
    feedback = FeedbackStore(sessions, usage)
    backends = Backends.connect(settings, UpstreamErrors(metrics.upstream_errors))
    stack.push_async_callback(backends.close)
    budgets = Budgets(
        settings,
        metrics,
        redis,
        sessions,
        BudgetList(sessions, settings.budget_cache_seconds, invalidations),
        PriceBook(
            lambda: backends.llm_router.ListModels(
                llm_pb2.ListModelsRequest(), timeout=settings.request_timeout_seconds
            )
        ),
    )
    if budgets.webhook is not None:
        stack.push_async_callback(budgets.webhook.drain)
    # Fetched in the background from the start; no route waits for it (core/embedding_info).
    embedding_info = EmbeddingInfoCache()
    stack.push_async_callback(embedding_info.aclose)
    embedding_info.refresh(backends.embedding)
    if tracer_provider is not None:
        stack.callback(tracer_provider.shutdown)
    return GatewayState(
        settings=settings,
        metrics=metrics,
        tracer_provider=tracer_provider,
        db_sessions=sessions,
        redis=redis,
        invalidations=invalidations,
        key_store=key_store,
        user_store=user_store,
        tenant_limits=tenant_limits,
        authenticator=authenticator,
        limiter=limiter,
        cache=cache,
        usage=usage,
        feedback=feedback,
        backends=backends,
        budgets=budgets,
        files=FileStore(sessions, settings.files_max_tenant_bytes),
        vector_stores=VectorStoreRecords(sessions),
        embedding_info=embedding_info,
    )


def state_of(app: Starlette) -> GatewayState:
    """The state of a started app (set by its lifespan)."""
    state: GatewayState = app.state.gateway
    return state
