"""Every route checks the caller: a table over the app's routes and its OpenAPI document.

A route added without ``UserPrincipal``/``EditorPrincipal``/``AdminPrincipal`` (or without
being listed as public below) fails here.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from aimesh_gateway.api.deps import EditorPrincipal, api_routes
from aimesh_gateway.auth.security import Role
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
    ("POST", "/v1/admin/budgets"): Role.ADMIN,
    ("GET", "/v1/admin/budgets"): Role.ADMIN,
    ("GET", "/v1/admin/budgets/{budget_id}"): Role.ADMIN,
    ("PATCH", "/v1/admin/budgets/{budget_id}"): Role.ADMIN,
    ("DELETE", "/v1/admin/budgets/{budget_id}"): Role.ADMIN,
    ("POST", "/v1/ask"): Role.USER,
    ("POST", "/v1/summarize"): Role.USER,
    ("POST", "/v1/chat/completions"): Role.USER,
    ("POST", "/v1/conversations/{conversation_id}/messages"): Role.USER,
    ("GET", "/v1/conversations"): Role.USER,
    ("DELETE", "/v1/conversations/{conversation_id}"): Role.USER,
    ("POST", "/v1/responses"): Role.USER,
    ("GET", "/v1/responses/{response_id}"): Role.USER,
    ("DELETE", "/v1/responses/{response_id}"): Role.USER,
    ("GET", "/v1/responses/{response_id}/input_items"): Role.USER,
    ("POST", "/v1/files"): Role.EDITOR,
    ("GET", "/v1/files/{file_id}/content"): Role.USER,
    ("DELETE", "/v1/files/{file_id}"): Role.EDITOR,
    ("POST", "/v1/vector_stores"): Role.EDITOR,
    ("GET", "/v1/vector_stores"): Role.USER,
    ("POST", "/v1/vector_stores/{vector_store_id}/files"): Role.EDITOR,
    ("GET", "/v1/vector_stores/{vector_store_id}/files/{file_id}"): Role.USER,
    ("POST", "/v1/vector_stores/{vector_store_id}/search"): Role.USER,
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


# ---------------------------------------------------------------- tenants

# Routes that write into the caller's own namespace: a collection name is per tenant, so
# another tenant's "docs" is simply that tenant's own (new) collection, never the owner's.
OWN_NAMESPACE: frozenset[tuple[str, str]] = frozenset(
    {
        ("POST", "/v1/collections/{collection}/documents"),
        ("POST", "/v1/collections/{collection}/files"),
    }
)
# Valid bodies, so a refusal is the tenant check's and not the body validation's.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/collections/{collection}/documents"): {
        "json": {"documents": [{"id": "d1", "text": "the intruder's text"}]}
    },
    ("POST", "/v1/collections/{collection}/files"): {
        "files": [("files", ("note.txt", b"the intruder's file", "text/plain"))]
    },
    ("POST", "/v1/collections/{collection}/search"): {"json": {"query": "secret"}},
    ("POST", "/v1/conversations/{conversation_id}/messages"): {"json": {"content": "hi"}},
    ("PUT", "/v1/admin/keys/{key_id}/limits"): {"json": {"rpm": 1, "tpm": None}},
    ("PUT", "/v1/admin/tenants/{tenant_id}/limits"): {"json": {"rpm": 1, "tpm": None}},
    ("PATCH", "/v1/admin/users/{user}"): {"json": {"disabled": True}},
    ("PATCH", "/v1/admin/budgets/{budget_id}"): {"json": {"limit_usd": 0.01}},
    ("PATCH", "/v1/collections/{collection}"): {"json": {"fusion": {"fusion": "rrf"}}},
    ("POST", "/v1/vector_stores/{vector_store_id}"): {"json": {"name": "taken over"}},
    ("POST", "/v1/vector_stores/{vector_store_id}/files"): {"json": {"file_id": "file-x"}},
    ("POST", "/v1/vector_stores/{vector_store_id}/file_batches"): {
        "json": {"file_ids": ["file-x"]}
    },
    ("POST", "/v1/vector_stores/{vector_store_id}/search"): {"json": {"query": "code word"}},
}


async def test_another_tenants_resources_are_not_found_on_every_route(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Every operation naming a resource in its path, called by an admin (every role) of
    another tenant, answers 404 (or writes into that tenant's own namespace), and the
    owner's resources are untouched. A new route with a path parameter fails here until
    its parameter has a resource below."""
    owner, intruder = f"own-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    owner_admin = bearer(token(owner, ["admin", "editor", "user"], subject="owner"))
    collection = "secret-docs"
    stored = await client.post(
        f"/v1/collections/{collection}/documents",
        json={"documents": [{"id": "d1", "text": "the code word is bluebird"}]},
        headers=owner_admin,
    )
    assert stored.status_code == 200, stored.text
    uploaded = await client.post(
        f"/v1/collections/{collection}/files",
        files=[("files", ("plan.txt", b"the plan", "text/plain"))],
        headers=owner_admin,
    )
    assert uploaded.status_code == 202, uploaded.text
    conversation = await client.post("/v1/conversations", json={}, headers=owner_admin)
    assert conversation.status_code == 201, conversation.text
    response = await client.post(
        "/v1/responses", json={"input": "the code word is bluebird"}, headers=owner_admin
    )
    assert response.status_code == 200, response.text
    key = await client.post("/v1/admin/keys", json={"roles": ["user"]}, headers=owner_admin)
    assert key.status_code == 201, key.text
    username = f"user-{uuid.uuid4().hex[:8]}"
    created_user = await client.post(
        "/v1/admin/users",
        json={"username": username, "password": "correct horse battery", "roles": ["user"]},
        headers=owner_admin,
    )
    assert created_user.status_code == 201, created_user.text
    budget = await client.post(
        "/v1/admin/budgets",
        json={"scope": "tenant", "window": "month", "limit_usd": 5},
        headers=owner_admin,
    )
    assert budget.status_code == 201, budget.text
    uploaded_file = await client.post(
        "/v1/files",
        files={"file": ("secret.md", b"the vault code is 4242", "text/markdown")},
        data={"purpose": "assistants"},
        headers=owner_admin,
    )
    assert uploaded_file.status_code == 200, uploaded_file.text
    file_id = uploaded_file.json()["id"]
    vector_store = await client.post(
        "/v1/vector_stores", json={"name": "Vault", "file_ids": [file_id]}, headers=owner_admin
    )
    assert vector_store.status_code == 200, vector_store.text
    vector_store_id = vector_store.json()["id"]
    batch = await client.post(
        f"/v1/vector_stores/{vector_store_id}/file_batches",
        json={"file_ids": [file_id]},
        headers=owner_admin,
    )
    assert batch.status_code == 200, batch.text
    resources = {
        "collection": collection,
        "document_id": "d1",
        "job_id": uploaded.json()["job_id"],
        "conversation_id": conversation.json()["id"],
        "response_id": response.json()["id"],
        "key_id": key.json()["id"],
        "user": username,
        "tenant_id": owner,
        "budget_id": budget.json()["id"],
        "file_id": file_id,
        "vector_store_id": vector_store_id,
        "batch_id": batch.json()["id"],
    }

    intruder_admin = bearer(token(intruder, ["admin", "editor", "user"], subject="owner"))
    operations = [
        (method, template, template.format(**resources))
        for method, template, _ in _operations(app)
        if "{" in template and (method, template) not in PUBLIC
    ]
    assert len(operations) >= 12  # the table really covered the API
    # The 404s first: the own-namespace writes would give the intruder a collection.
    operations.sort(key=lambda op: (op[0], op[1]) in OWN_NAMESPACE)
    for method, template, url in operations:
        kwargs = BODIES.get((method, template), {})
        response = await client.request(method, url, headers=intruder_admin, **kwargs)
        if (method, template) in OWN_NAMESPACE:
            assert response.status_code in (200, 202), (method, template, response.text)
        else:
            assert_problem(response, 404)

    # The owner's resources are all there and unchanged.
    documents = await client.get(f"/v1/collections/{collection}/documents", headers=owner_admin)
    assert [d["id"] for d in documents.json()["documents"]] == ["d1", "plan.txt"], documents.text
    found = await client.post(
        f"/v1/collections/{collection}/search", json={"query": "code word"}, headers=owner_admin
    )
    assert "bluebird" in found.json()["results"][0]["text"]
    assert "intruder" not in found.text
    for url in (
        f"/v1/jobs/{resources['job_id']}",
        f"/v1/conversations/{resources['conversation_id']}",
        f"/v1/responses/{resources['response_id']}",
        f"/v1/responses/{resources['response_id']}/input_items",
        f"/v1/admin/keys/{resources['key_id']}",
        f"/v1/admin/budgets/{resources['budget_id']}",
        f"/v1/files/{file_id}",
        f"/v1/files/{file_id}/content",
        f"/v1/vector_stores/{vector_store_id}",
        f"/v1/vector_stores/{vector_store_id}/files/{file_id}",
        f"/v1/vector_stores/{vector_store_id}/file_batches/{resources['batch_id']}",
    ):
        assert (await client.get(url, headers=owner_admin)).status_code == 200, url
    users = (await client.get("/v1/admin/users", headers=owner_admin)).json()["users"]
    assert [(u["username"], u["disabled_at"]) for u in users] == [(username, None)]
    budgets = (await client.get("/v1/admin/budgets", headers=owner_admin)).json()["budgets"]
    assert [b["limit_usd"] for b in budgets] == [5.0], budgets
    store = (await client.get(f"/v1/vector_stores/{vector_store_id}", headers=owner_admin)).json()
    assert (store["name"], store["file_counts"]["completed"]) == ("Vault", 1), store
    searched = await client.post(
        f"/v1/vector_stores/{vector_store_id}/search",
        json={"query": "vault code"},
        headers=owner_admin,
    )
    assert [r["file_id"] for r in searched.json()["data"]] == [file_id], searched.text
    keys = (await client.get("/v1/admin/keys", headers=owner_admin)).json()
    assert all(k.get("rpm") is None for k in keys["keys"]), keys
