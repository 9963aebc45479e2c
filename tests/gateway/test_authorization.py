"""Every route checks the caller: a table over the app's routes and its OpenAPI document.

A route added without ``UserPrincipal``/``EditorPrincipal``/``AdminPrincipal`` (or without
being listed as public below) fails here.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from aimesh_gateway.api.deps import EditorPrincipal, api_routes
from aimesh_gateway.core.security import Role
from tests.gateway.helpers import TENANT, assert_problem, bearer, token

PUBLIC: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("POST", "/v1/auth/token"),
    }
)


def required_role(dependant: Dependant) -> Role | None:
    """The role a route's dependencies demand (the highest if several)."""
    found: list[Role] = []
    for dependency in dependant.dependencies:
        role = getattr(dependency.call, "required_role", None)
        if isinstance(role, Role):
            found.append(role)
        nested = required_role(dependency)
        if nested is not None:
            found.append(nested)
    return max(found) if found else None


def _api_routes(app: FastAPI) -> list[tuple[str, APIRoute]]:
    return [
        (method, route)
        for route in api_routes(app.routes)
        for method in sorted(route.methods or ())
    ]


def test_every_non_public_route_demands_a_role(app: FastAPI) -> None:
    unguarded = [
        f"{method} {route.path_format}"
        for method, route in _api_routes(app)
        if (method, route.path_format) not in PUBLIC and required_role(route.dependant) is None
    ]
    assert unguarded == [], "routes without a role check"
    # The public list names only routes that exist (a stale entry would hide nothing).
    existing = {(method, route.path_format) for method, route in _api_routes(app)}
    assert existing >= PUBLIC


# Roles of routes whose level is a product decision, pinned so a change is deliberate.
EXPECTED_ROLES: dict[tuple[str, str], Role] = {
    ("POST", "/v1/feedback"): Role.USER,
    ("GET", "/v1/admin/feedback"): Role.ADMIN,
    ("GET", "/v1/admin/feedback/summary"): Role.ADMIN,
    ("GET", "/v1/admin/usage"): Role.ADMIN,
    ("GET", "/v1/admin/conversations"): Role.ADMIN,
    ("POST", "/v1/admin/users"): Role.ADMIN,
    ("GET", "/v1/admin/users"): Role.ADMIN,
    ("PATCH", "/v1/admin/users/{user}"): Role.ADMIN,
    ("DELETE", "/v1/admin/users/{user}"): Role.ADMIN,
    ("POST", "/v1/ask"): Role.USER,
    ("POST", "/v1/summarize"): Role.USER,
    ("POST", "/v1/chat/completions"): Role.USER,
    ("POST", "/v1/conversations/{conversation_id}/messages"): Role.USER,
    ("GET", "/v1/conversations"): Role.USER,
    ("DELETE", "/v1/conversations/{conversation_id}"): Role.USER,
}


def test_routes_demand_their_expected_role(app: FastAPI) -> None:
    roles = {
        (m, route.path_format): required_role(route.dependant) for m, route in _api_routes(app)
    }
    assert {key: roles.get(key) for key in EXPECTED_ROLES} == EXPECTED_ROLES


def _sample(parameter: dict[str, Any]) -> str:
    pattern = parameter.get("schema", {}).get("pattern", "")
    for candidate in ("docs", "a" * 32, "doc-1", "1"):
        if not pattern or re.match(pattern, candidate):
            return candidate
    raise AssertionError(f"no sample value for {parameter}")


def _operations(app: FastAPI) -> list[tuple[str, str, str]]:
    """(method, template, concrete URL) of every operation in the OpenAPI document."""
    operations = []
    for template, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            url = template
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    url = url.replace("{" + parameter["name"] + "}", _sample(parameter))
            operations.append((method.upper(), template, url))
    return operations


async def test_every_operation_refuses_anonymous_and_lower_roles(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    roles = {
        (m, route.path_format): required_role(route.dependant) for m, route in _api_routes(app)
    }
    checked = 0
    for method, template, url in _operations(app):
        if (method, template) in PUBLIC:
            continue
        needed = roles[(method, template)]
        assert needed is not None, f"{method} {template} has no role check"
        kwargs: dict[str, Any] = {"json": {}} if method in {"POST", "PUT", "PATCH"} else {}
        anonymous = await client.request(method, url, **kwargs)
        assert_problem(anonymous, 401)
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        garbage = await client.request(method, url, headers=bearer("garbage"), **kwargs)
        assert_problem(garbage, 401)
        for role in Role:
            if role >= needed:
                continue
            headers = bearer(token(TENANT, [role.name.lower()]))
            refused = await client.request(method, url, headers=headers, **kwargs)
            assert_problem(refused, 403)
        checked += 1
    assert checked >= 10  # the table really covered the API


def test_the_audit_sees_guarded_and_unguarded_routes() -> None:
    """The audit itself can fail: a bare route has no role, a guarded one has its role."""
    router = APIRouter()

    @router.get("/bare")
    async def bare() -> None:
        return None

    @router.get("/guarded")
    async def guarded(principal: EditorPrincipal) -> None:
        return None

    found = {
        route.path_format: required_role(route.dependant) for route in api_routes(router.routes)
    }
    assert found == {"/bare": None, "/guarded": Role.EDITOR}
