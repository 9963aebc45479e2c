"""The dependencies of api/deps.py: the role check, then the admission step, in this order."""

from __future__ import annotations

import uuid

from fastapi import Depends

from aimesh_gateway.api.deps import require_role, role_and_admission
from aimesh_gateway.auth.security import Role
from aimesh_gateway.main import create_app
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import assert_problem, bearer, running, token


async def test_a_refused_role_is_not_admitted_and_spends_no_budget(fake_mesh: FakeMesh) -> None:
    app = create_app(fake_mesh.settings(rate_limit_rpm=2))
    caller = bearer(token(f"rd-{uuid.uuid4().hex[:8]}", ["user"]))
    async with running(app) as client:
        for _ in range(3):  # 403 before admission: these count against nothing
            assert_problem(await client.get("/v1/admin/keys", headers=caller), 403)
        statuses = [(await client.get("/v1/models", headers=caller)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        # No credential: 401 comes first of all.
        assert_problem(await client.get("/v1/models"), 401)


async def test_the_role_check_alone_does_not_admit(fake_mesh: FakeMesh) -> None:
    app = create_app(fake_mesh.settings(rate_limit_rpm=1))

    async def ok() -> dict[str, str]:
        return {}

    app.add_api_route("/role-only", ok, dependencies=[Depends(require_role(Role.USER))])
    app.add_api_route("/editor-only", ok, dependencies=[Depends(require_role(Role.EDITOR))])
    app.add_api_route("/admitted", ok, dependencies=[Depends(role_and_admission(Role.USER))])
    caller = bearer(token(f"ro-{uuid.uuid4().hex[:8]}", ["user"]))
    async with running(app) as client:
        for _ in range(3):
            assert (await client.get("/role-only", headers=caller)).status_code == 200
        assert_problem(await client.get("/editor-only", headers=caller), 403)
        assert_problem(await client.get("/role-only"), 401)
        assert (await client.get("/admitted", headers=caller)).status_code == 200
        assert_problem(await client.get("/admitted", headers=caller), 429)
