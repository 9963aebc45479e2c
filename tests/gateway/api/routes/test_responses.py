"""/v1/responses over the fake mesh: validation and refusals (OpenAI's error object in the
problem), input item listing, and the stored shape. The full path with the official SDK on
the real router is in test_responses_sdk.py; roles and other tenants in
tests/gateway/test_authorization.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.gateway.helpers import assert_problem, user


async def _create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/responses", json=body, headers=user())
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_a_response_has_openais_shape(client: httpx.AsyncClient) -> None:
    created = await _create(client, input="hello world", metadata={"k": "v"})
    assert created["object"] == "response"
    assert created["status"] == "completed"
    [message] = created["output"]
    assert message["type"] == "message"
    assert message["content"][0]["type"] == "output_text"
    assert message["content"][0]["text"] == "echo: hello world"
    assert created["usage"]["total_tokens"] == (
        created["usage"]["input_tokens"] + created["usage"]["output_tokens"]
    )
    assert created["metadata"] == {"k": "v"}
    stored = await client.get(f"/v1/responses/{created['id']}", headers=user())
    assert stored.json() == created


async def test_input_items_are_listed_newest_first_in_pages(client: httpx.AsyncClient) -> None:
    created = await _create(
        client,
        input=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "one"}]},
            {"type": "message", "role": "user", "content": "two"},
        ],
    )
    url = f"/v1/responses/{created['id']}/input_items"
    first = (await client.get(url, params={"limit": 2}, headers=user())).json()
    assert [item["content"][0]["text"] for item in first["data"]] == ["two", "one"]
    assert first["has_more"] is True
    assert (first["first_id"], first["last_id"]) == (first["data"][0]["id"], first["data"][1]["id"])
    rest = (await client.get(url, params={"after": first["last_id"]}, headers=user())).json()
    assert [item["role"] for item in rest["data"]] == ["developer"]
    assert rest["has_more"] is False
    ascending = (await client.get(url, params={"order": "asc"}, headers=user())).json()
    assert [item["content"][0]["text"] for item in ascending["data"]] == ["Be brief.", "one", "two"]
    unknown = await client.get(url, params={"after": "msg_nope"}, headers=user())
    assert "after" in assert_problem(unknown, 400)["detail"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"input": "hi", "frobnicate": 1}, "Unrecognized request argument supplied: frobnicate"),
        (
            {"input": "hi", "conversation": "conv_1"},
            "Unsupported request argument supplied: conversation",
        ),
        ({"input": "hi", "background": True}, "background"),
        ({"input": "hi", "truncation": "auto"}, "truncation"),
        ({"input": "hi", "include": ["reasoning.encrypted_content"]}, "include"),
        ({"input": [{"type": "reasoning", "id": "rs_1"}]}, "input[0].type 'reasoning'"),
        ({"input": [{"content": "no role"}]}, "input[0].role"),
        ({"input": "hi", "tools": [{"type": "computer_use_preview"}]}, "tools[0].type"),
        ({"input": "hi", "tool_choice": "required"}, "tool_choice"),
    ],
)
async def test_what_aimesh_cannot_do_is_a_400_with_openais_error(
    client: httpx.AsyncClient, body: dict[str, Any], named: str
) -> None:
    response = await client.post("/v1/responses", json=body, headers=user())
    problem = assert_problem(response, 400)
    assert named in problem["detail"]
    assert problem["error"]["type"] == "invalid_request_error"
    assert named in problem["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "input"),
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": "hi", "temperature": 3}, "temperature"),
        ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "hi", "previous_response_id": "a b"}, "previous_response_id"),
        ({"input": "hi", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        (
            {"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}},
            "text.format",
        ),
    ],
)
async def test_invalid_requests_are_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/responses", json=body, headers=user())
    problem = assert_problem(response, 422)
    assert field in response.text, problem


async def test_missing_responses_are_404_with_openais_error(client: httpx.AsyncClient) -> None:
    for method, url in (
        ("GET", "/v1/responses/resp_missing"),
        ("DELETE", "/v1/responses/resp_missing"),
        ("GET", "/v1/responses/resp_missing/input_items"),
    ):
        problem = assert_problem(await client.request(method, url, headers=user()), 404)
        assert problem["error"]["type"] == "not_found_error"
    continued = await client.post(
        "/v1/responses",
        json={"input": "hi", "previous_response_id": "resp_missing"},
        headers=user(),
    )
    assert "resp_missing" in assert_problem(continued, 404)["error"]["message"]


async def test_get_refuses_to_stream_again(client: httpx.AsyncClient) -> None:
    created = await _create(client, input="hi")
    again = await client.get(
        f"/v1/responses/{created['id']}", params={"stream": "true"}, headers=user()
    )
    assert "stream" in assert_problem(again, 400)["detail"]


async def test_delete_answers_openais_deleted_object(client: httpx.AsyncClient) -> None:
    created = await _create(client, input="hi")
    deleted = await client.delete(f"/v1/responses/{created['id']}", headers=user())
    assert deleted.json() == {"id": created["id"], "object": "response", "deleted": True}
