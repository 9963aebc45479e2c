"""GET /v1/models (OpenAI list shape)."""

from __future__ import annotations

import asyncio

import httpx

from aimesh_gateway.api.routes.models import EMBEDDING_RETRY_SECONDS
from aimesh_gateway.main import create_app
from aimesh_gateway.state import state_of
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import running, user


async def test_models_in_openai_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models", headers=user())
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "data": [
            {
                "id": "default",
                "object": "model",
                "created": 0,
                "owned_by": "aimesh",
                "description": "Echo model for tests",
                "context_window": 4096,
                "default_for": ["chat", "summarize", "qa"],
            },
            {
                "id": "fast",
                "object": "model",
                "created": 0,
                "owned_by": "aimesh",
                "description": "Shorter replies",
                "context_window": 2048,
                "default_for": [],
            },
        ],
    }


async def test_a_failing_embedding_service_is_asked_again_only_after_a_pause(
    fake_mesh: FakeMesh,
) -> None:
    """The fake mesh's embedding server has no Info (UNIMPLEMENTED): the chat models are
    listed without it, and the failing call is not repeated on every request."""
    app = create_app(fake_mesh.settings())

    def failed_info_calls() -> float:
        value = state_of(app).metrics.registry.get_sample_value(
            "aimesh_upstream_errors_total",
            {"service": "aimesh.embedding.v1.EmbeddingService", "code": "UNIMPLEMENTED"},
        )
        return value or 0.0

    async def listed() -> list[str]:
        response = await client.get("/v1/models", headers=user())
        assert response.status_code == 200
        await asyncio.sleep(0.05)  # the error counter is updated by a watcher task
        return [model["id"] for model in response.json()["data"]]

    async with running(app) as client:
        for _ in range(3):
            assert await listed() == ["default", "fast"]
        assert failed_info_calls() == 1
        info = state_of(app).embedding_info
        assert info.failed_at is not None
        info.failed_at -= EMBEDDING_RETRY_SECONDS
        assert await listed() == ["default", "fast"]
        assert failed_info_calls() == 2
