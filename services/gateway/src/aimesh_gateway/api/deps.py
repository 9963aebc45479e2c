"""Typed dependencies of the routes: settings, backends, call options and the caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Path, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.routing import BaseRoute

from aimesh_common.limits import COLLECTION_NAME_PATTERN, COLLECTION_NAME_RULE
from aimesh_gateway.auth.keys import KeyStore
from aimesh_gateway.auth.security import AuthenticationError, Principal, Role
from aimesh_gateway.auth.users import UserStore
from aimesh_gateway.core.backends import Backends
from aimesh_gateway.core.config import Settings
from aimesh_gateway.core.errors import request_id_of
from aimesh_gateway.limits.budgets import Budgets, Hold
from aimesh_gateway.limits.ratelimit import TenantLimitSource
from aimesh_gateway.observability.metrics import HttpMetrics
from aimesh_gateway.observability.tracing import trace_metadata
from aimesh_gateway.state import GatewayState, state_of
from aimesh_gateway.stores.cache import ResponseCache
from aimesh_gateway.stores.feedback import FeedbackStore
from aimesh_gateway.stores.files import FileStore
from aimesh_gateway.stores.usage import Spent, UsageMeter
from aimesh_gateway.stores.vector_stores import VectorStoreRecords

if TYPE_CHECKING:
    from aimesh.embedding.v1.embedding_pb2_grpc import EmbeddingServiceAsyncStub
    from aimesh.llm.v1.llm_pb2_grpc import LLMRouterServiceAsyncStub
    from aimesh.retrieval.v1.retrieval_pb2_grpc import RetrievalServiceAsyncStub

API_PREFIX = "/v1"


T = TypeVar("T")


def from_state(part: Callable[[GatewayState], T]) -> Any:
    """A dependency handing out ``part`` of the app's :class:`GatewayState`, for
    ``Annotated[Type, from_state(lambda state: state.part)]``."""

    async def dependency(request: Request) -> T:
        return part(state_of(request.app))

    return Depends(dependency)


SettingsDep = Annotated[Settings, from_state(lambda state: state.settings)]
BackendsDep = Annotated[Backends, from_state(lambda state: state.backends)]
KeyStoreDep = Annotated[KeyStore, from_state(lambda state: state.key_store)]
UserStoreDep = Annotated[UserStore, from_state(lambda state: state.user_store)]
FeedbackStoreDep = Annotated[FeedbackStore, from_state(lambda state: state.feedback)]
DbSessionsDep = Annotated[
    async_sessionmaker[AsyncSession], from_state(lambda state: state.db_sessions)
]
UsageMeterDep = Annotated[UsageMeter, from_state(lambda state: state.usage)]
TenantLimitsDep = Annotated[TenantLimitSource, from_state(lambda state: state.tenant_limits)]
MetricsDep = Annotated[HttpMetrics, from_state(lambda state: state.metrics)]
BudgetsDep = Annotated[Budgets, from_state(lambda state: state.budgets)]
RedisDep = Annotated[Redis | None, from_state(lambda state: state.redis)]
FileStoreDep = Annotated[FileStore, from_state(lambda state: state.files)]
VectorStoresDep = Annotated[VectorStoreRecords, from_state(lambda state: state.vector_stores)]


@dataclass(frozen=True)
class Upstream:
    """The backend stubs and this request's gRPC call options: the deadline and the request
    id as ``x-request-id`` metadata (with the trace context when tracing).

    One dependency rather than two (stubs, options): every route calls a backend, and each
    dependency costs every request a round of FastAPI's dependency solving.
    """

    backends: Backends
    timeout: float
    metadata: tuple[tuple[str, str], ...]

    @property
    def llm_router(self) -> LLMRouterServiceAsyncStub:
        return self.backends.llm_router

    @property
    def retrieval(self) -> RetrievalServiceAsyncStub:
        return self.backends.retrieval

    @property
    def embedding(self) -> EmbeddingServiceAsyncStub:
        return self.backends.embedding


async def get_upstream(request: Request) -> Upstream:
    state = state_of(request.app)
    request_id = request_id_of(request)
    metadata: tuple[tuple[str, str], ...] = (("x-request-id", request_id),) if request_id else ()
    if state.tracer_provider is not None:
        metadata += trace_metadata()
    return Upstream(state.backends, state.settings.request_timeout_seconds, metadata)


UpstreamDep = Annotated[Upstream, Depends(get_upstream)]

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key (`am_...`), a JWT from POST /v1/auth/token, an HS256 JWT signed "
    "with the shared secret, or an RS256/ES256 JWT from the configured OIDC issuer.",
)
"""The OpenAPI security scheme of every authenticated route (declared by
:func:`declare_bearer_security`). The routes read the header themselves
(:func:`bearer_credential`): as a sub-dependency, HTTPBearer would cost every request one
more round of FastAPI's dependency solving."""


def bearer_credential(request: Request) -> str | None:
    """The credential of ``Authorization: Bearer <credential>``, as HTTPBearer parses it."""
    authorization = request.headers.get("authorization")
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credential:
        return None
    return credential


async def _authenticated(request: Request) -> Principal:
    """The authenticated caller (once per request, whichever dependency asks first); 401
    with ``WWW-Authenticate: Bearer`` otherwise."""
    state = request.scope.setdefault("state", {})  # what request.state wraps; a miss is None
    known: Principal | None = state.get("principal")
    if known is not None:
        return known
    credential = bearer_credential(request)
    if credential is None:
        raise HTTPException(
            401,
            "missing credential: send Authorization: Bearer <API key or JWT>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        principal = await state_of(request.app).authenticator.authenticate(credential)
    except AuthenticationError as error:
        raise HTTPException(
            401, error.message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from None
    state["principal"] = principal
    # For the access log (the tenant, never the credential).
    state["tenant_id"] = principal.tenant_id
    return principal


async def get_principal(request: Request) -> Principal:
    """The authenticated caller; 401 with ``WWW-Authenticate: Bearer`` otherwise."""
    return await _authenticated(request)


def authenticates(dependant: Dependant) -> bool:
    """Whether solving ``dependant`` authenticates the caller (get_principal or a role)."""
    return any(
        dependency.call is get_principal
        or getattr(dependency.call, "required_role", None) is not None
        or authenticates(dependency)
        for dependency in dependant.dependencies
    )


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """API routes, also inside included routers (which carry their full path)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from api_routes(included.routes)


def declare_bearer_security(app: FastAPI, schema: dict[str, Any]) -> None:
    """Declare :data:`bearer_scheme` in ``schema`` on every operation that authenticates."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearer"] = bearer_scheme.model.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    for route in api_routes(app.routes):
        if not route.include_in_schema or not authenticates(route.dependant):
            continue
        operations = schema.get("paths", {}).get(route.path_format, {})
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is not None:
                operation["security"] = [{"bearer": []}]


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_role(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """The role check: a dependency that passes principals holding ``role`` (or a higher
    one), 403 otherwise (401 before, without a valid credential)."""

    async def dependency(request: Request) -> Principal:
        principal = await _authenticated(request)
        if not principal.has_role(role):
            raise HTTPException(403, f"this operation needs the role {role.name.lower()}")
        return principal

    dependency.required_role = role  # type: ignore[attr-defined]
    return dependency


async def admit(request: Request, principal: Principal) -> None:
    """The admission step: count this request against the caller's rate limits (its key's
    and its tenant's RPM, its TPM budget); 429 with ``Retry-After`` once one is spent."""
    await state_of(request.app).limiter.admit(request, principal)


def role_and_admission(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """What a route's caller passes: :func:`require_role`, then :func:`admit` (401, 403,
    then 429, in this order).

    One dependency rather than two: each costs every request a round of FastAPI's
    dependency solving.
    """
    check_role = require_role(role)

    async def dependency(request: Request) -> Principal:
        principal = await check_role(request)
        await admit(request, principal)
        return principal

    # Read by the route audit (tests/gateway/test_authorization.py): every non-public route
    # must depend on one of these.
    dependency.required_role = role  # type: ignore[attr-defined]
    return dependency


UserPrincipal = Annotated[Principal, Depends(role_and_admission(Role.USER))]
EditorPrincipal = Annotated[Principal, Depends(role_and_admission(Role.EDITOR))]
AdminPrincipal = Annotated[Principal, Depends(role_and_admission(Role.ADMIN))]


@dataclass(frozen=True)
class UsageContext:
    """Records the tokens of this request's call for its principal (TPM budgets, metrics,
    usage records), with the request id and what answered (feedback refers to it); and
    the call's budget reservation (:meth:`reserve` before the call, settled by
    :meth:`record` to its real cost, by :meth:`record_later` to what a call that ended
    early spent, or by :meth:`release` when it was charged nothing)."""

    meter: UsageMeter
    principal: Principal
    route: str
    request_id: str = ""
    budgets: Budgets | None = None
    holds: list[Hold] = field(default_factory=list)

    async def reserve(self, model: str, task: str, prompt_tokens: int, max_tokens: int = 0) -> None:
        """Reserve the call's largest possible cost against the budgets that apply
        (429 ``budget_exceeded`` when a hard one cannot cover it)."""
        if self.budgets is None:
            return
        hold = await self.budgets.reserve(self.principal, model, task, prompt_tokens, max_tokens)
        if hold is not None:
            self.holds.append(hold)

    async def budgeted(self) -> bool:
        """Whether the caller's tenant has any budget (a call may then need a reservation)."""
        if self.budgets is None:
            return False
        return bool(await self.budgets.budgets.of_tenant(self.principal.tenant_id))

    async def record(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        provider: str = "",
        prompt_version: str = "",
        estimated: bool = False,
        cost_usd: float = 0.0,
    ) -> None:
        """Record the call's usage and settle its reservations to ``cost_usd``."""
        await self._settle(self._claim(), cost_usd)
        await self.meter.record(
            self.principal,
            self.route,
            model,
            prompt_tokens,
            completion_tokens,
            request_id=self.request_id,
            provider=provider,
            prompt_version=prompt_version,
            estimated=estimated,
            cost_usd=cost_usd,
        )

    def record_later(self, model: str, spent: Spent) -> None:
        """Record what a call that ended early had spent (the router's last ``spent``) and
        settle its reservations to that cost, off the request path (the request's task may
        be being cancelled)."""
        holds = self._claim()

        async def settle_and_record() -> None:
            await self._settle(holds, spent.cost_usd)
            await self.meter.record(
                self.principal,
                self.route,
                model,
                spent.prompt_tokens,
                spent.completion_tokens,
                request_id=self.request_id,
                provider=spent.provider,
                prompt_version=spent.prompt_version,
                estimated=spent.estimated,
                cost_usd=spent.cost_usd,
            )

        self.meter.spawn(settle_and_record())

    def release_soon(self) -> None:
        """:meth:`release` in the background (from an ``except`` a cancellation may run)."""
        holds = self._claim()
        if holds:
            self.meter.spawn(self._settle(holds, 0.0))

    async def release(self) -> None:
        """The call was charged nothing (it failed before answering, or answered without a
        usage): give the reservations back. A no-op once the call was recorded."""
        await self._settle(self._claim(), 0.0)

    def _claim(self) -> list[Hold]:
        """The open reservations, taken at once (synchronously) by the one path that
        settles them: a recording, a background recording or a release never race."""
        holds = [hold for hold in self.holds if not hold.settled]
        self.holds.clear()
        return holds

    @staticmethod
    async def _settle(holds: list[Hold], cost_usd: float) -> None:
        for hold in holds:
            await hold.settle(cost_usd)


async def get_usage(request: Request, principal: CurrentPrincipal) -> UsageContext:
    route = getattr(request.scope.get("route"), "path_format", request.url.path)
    state = state_of(request.app)
    return UsageContext(
        state.usage, principal, str(route), request_id_of(request) or "", state.budgets
    )


UsageDep = Annotated[UsageContext, Depends(get_usage)]


@dataclass
class CacheContext:
    """The response cache as one route sees it (tenant and route fixed)."""

    cache: ResponseCache
    tenant_id: str
    route: str
    bypass: bool

    async def lookup(
        self, model: str, payload: Any, collection: str | None = None
    ) -> tuple[str | None, Response | None]:
        """``(key, cached response)``; the key is None when caching is off."""
        if not self.cache.enabled:
            return None, None
        generation = 0
        if collection is not None:
            try:
                generation = await self.cache.generation(self.tenant_id, collection)
            except RedisError:
                return None, None
        key = self.cache.key(self.tenant_id, self.route, model, payload, generation)
        if self.bypass:
            self.cache.metrics.cache.labels(self.route, "bypass").inc()
            return key, None
        body = await self.cache.get(key, self.route)
        if body is None:
            return key, None
        return key, Response(body, media_type="application/json", headers={"X-Cache": "hit"})

    async def store(self, key: str | None, model: BaseModel) -> None:
        if key is not None:
            await self.cache.set(key, model.model_dump_json().encode(), self.route)


async def get_cache(request: Request, principal: CurrentPrincipal) -> CacheContext:
    route = getattr(request.scope.get("route"), "path_format", request.url.path)
    directives = request.headers.get("cache-control", "").lower()
    return CacheContext(
        state_of(request.app).cache,
        principal.tenant_id,
        str(route),
        bypass="no-cache" in directives or "no-store" in directives,
    )


CacheDep = Annotated[CacheContext, Depends(get_cache)]


CollectionPath = Annotated[
    str,
    Path(
        pattern=COLLECTION_NAME_PATTERN,
        description=f"Collection name: {COLLECTION_NAME_RULE}.",
        examples=["docs"],
    ),
]
