"""POST /v1/summarize."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import assert_problem, user

TEXT = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron"


async def test_summary_with_style_and_length(
    client: httpx.AsyncClient, fake_mesh: FakeMesh
) -> None:
    response = await client.post(
        "/v1/summarize",
        json={"text": TEXT, "style": "bullets", "max_words": 3, "model": "fast"},
        headers=user("summ"),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "summary": "- alpha beta gamma",
        "model": "fast",
        "usage": {
            "prompt_tokens": 15,
            "completion_tokens": 4,
            "total_tokens": 19,
            "estimated": True,
            "cost_usd": 0.0,
        },
        "provider": "fake",
        "prompt_version": "summarize/v1",
    }
    sent = fake_mesh.router.recorder.last("Summarize")
    assert (sent.tenant_id, sent.request.style, sent.request.max_words) == ("summ", "bullets", 3)


async def test_defaults(client: httpx.AsyncClient, fake_mesh: FakeMesh) -> None:
    response = await client.post("/v1/summarize", json={"text": TEXT}, headers=user())
    assert response.status_code == 200
    sent = fake_mesh.router.recorder.last("Summarize").request
    # No model named: the router picks the alias that serves summaries by default.
    assert (sent.style, sent.max_words, sent.model) == ("brief", 0, "")
    assert response.json()["model"] == "default"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": ""},
        {"text": "t", "style": "poem"},
        {"text": "t", "max_words": 0},
        {"text": "t", "max_words": 10_001},
    ],
)
async def test_invalid_summarize_is_422(client: httpx.AsyncClient, body: object) -> None:
    assert_problem(await client.post("/v1/summarize", json=body, headers=user()), 422)


async def test_backend_invalid_argument_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/summarize", json={"text": "   "}, headers=user())
    assert "text is empty" in assert_problem(response, 400)["detail"]
