"""GET /v1/models (OpenAI list shape)."""

from __future__ import annotations

import httpx

from tests.gateway.helpers import user


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
            },
            {
                "id": "fast",
                "object": "model",
                "created": 0,
                "owned_by": "aimesh",
                "description": "Shorter replies",
                "context_window": 2048,
            },
        ],
    }
