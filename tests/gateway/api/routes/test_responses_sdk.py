"""The Responses API with the official OpenAI SDK over the real path: the SDK over TCP ->
the gateway (uvicorn) -> the real llm-router over gRPC, which stores responses in its
conversation store (SQLite here) -> an OpenAI-protocol test server standing in for the
hosted model, which records what it received and answers with scripted replies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import FunctionToolParam

from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import editor, token
from tests.gateway.live_stack import gateway_on_router
from tests.llm_router.openai_server import FakeOpenAI, Reply

USAGE = {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@dataclass
class Mesh:
    upstream: FakeOpenAI
    url: str


@pytest.fixture(scope="module")
async def mesh(
    fake_mesh: FakeMesh, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    """A real router (``default``: openai on the test server, ``extractive``: local) storing
    in a SQLite file of its own, behind a gateway served by uvicorn."""
    upstream = FakeOpenAI()
    await upstream.start()
    data_dir: Path = tmp_path_factory.mktemp("responses-router")
    async with gateway_on_router(
        fake_mesh,
        {
            "models": {
                "default": {
                    "provider": "openai",
                    "model": "test-model",
                    "base_url": upstream.base_url,
                    "timeout_seconds": 30,
                    "max_retries": 0,
                },
                "extractive": {"provider": "local"},
            }
        },
        data_dir=data_dir,
    ) as url:
        yield Mesh(upstream, url)
    await upstream.stop()


def _texts(items: Sequence[object]) -> list[str]:
    """The text of each listed input message."""
    return [part.text for item in items for part in getattr(item, "content", None) or ()]


def _client(mesh: Mesh, tenant: str, subject: str = "ann") -> openai.AsyncOpenAI:
    key = token(tenant, ["user"], subject=subject)
    return openai.AsyncOpenAI(base_url=f"{mesh.url}/v1", api_key=key, max_retries=0)


@pytest.fixture
async def sdk(mesh: Mesh) -> AsyncIterator[openai.AsyncOpenAI]:
    mesh.upstream.reset()
    async with _client(mesh, "resp-t") as client:
        yield client


async def test_create_retrieve_input_items_and_delete(sdk: openai.AsyncOpenAI, mesh: Mesh) -> None:
    mesh.upstream.enqueue(Reply(content="Hello there.", usage=USAGE))
    response = await sdk.responses.create(
        model="default",
        input="Say hello.",
        instructions="Be brief.",
        max_output_tokens=50,
        temperature=0.2,
        metadata={"ticket": "42"},
    )
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "Hello there."
    assert response.model == "default"
    assert response.metadata == {"ticket": "42"}
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (30, 9)
    assert response.usage.total_tokens == 39
    sent = mesh.upstream.requests[-1].body
    assert sent["messages"][-2:] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
    ]
    assert sent["temperature"] == pytest.approx(0.2)
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 50

    again = await sdk.responses.retrieve(response.id)
    assert again.model_dump() == response.model_dump()
    items = await sdk.responses.input_items.list(response.id)
    assert [(item.type, getattr(item, "role", None)) for item in items.data] == [
        ("message", "user")
    ]
    assert _texts(items.data) == ["Say hello."]

    await sdk.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError) as gone:
        await sdk.responses.retrieve(response.id)
    assert response.id in gone.value.message
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.delete(response.id)


async def test_previous_response_id_continues_over_three_turns(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    mesh.upstream.enqueue(
        Reply(content="Noted: Ada.", usage=USAGE),
        Reply(content="Noted: Paris.", usage=USAGE),
        Reply(content="You are Ada from Paris.", usage=USAGE),
    )
    first = await sdk.responses.create(
        model="default", input="My name is Ada.", instructions="Only the first turn."
    )
    second = await sdk.responses.create(
        model="default", input="I live in Paris.", previous_response_id=first.id
    )
    third = await sdk.responses.create(
        model="default",
        input=[{"role": "user", "content": "Who am I?"}],
        previous_response_id=second.id,
    )
    assert third.previous_response_id == second.id
    assert third.output_text == "You are Ada from Paris."
    sent = [m for m in mesh.upstream.requests[-1].body["messages"] if m["role"] != "system"]
    assert sent == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Noted: Ada."},
        {"role": "user", "content": "I live in Paris."},
        {"role": "assistant", "content": "Noted: Paris."},
        {"role": "user", "content": "Who am I?"},
    ]
    # Instructions belong to their own response: not carried over.
    assert "Only the first turn." not in json.dumps(mesh.upstream.requests[-1].body)
    # Only the turn's own input is listed.
    items = await sdk.responses.input_items.list(third.id)
    assert _texts(items.data) == ["Who am I?"]


async def test_streaming_sends_every_typed_event_in_sequence(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    mesh.upstream.enqueue(Reply(content="one two three", usage=USAGE))
    stream = await sdk.responses.create(model="default", input="Count.", stream=True)
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "one two three"
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.status == "completed"
    assert completed.output_text == "one two three"
    assert completed.usage is not None
    assert completed.usage.output_tokens == 9
    stored = await sdk.responses.retrieve(completed.id)
    assert stored.output_text == "one two three"


async def test_the_stream_helper_accumulates_the_final_response(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    mesh.upstream.enqueue(Reply(content="streamed text", usage=USAGE))
    async with sdk.responses.stream(model="default", input="Go.") as stream:
        texts = [
            event.delta async for event in stream if event.type == "response.output_text.delta"
        ]
        final = await stream.get_final_response()
    assert "".join(texts) == "streamed text"
    assert final.output_text == "streamed text"
    assert final.status == "completed"


async def test_a_cut_reply_streams_response_incomplete_with_its_reason(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    mesh.upstream.enqueue(Reply(content="a b c", finish_reason="length", usage=USAGE))
    stream = await sdk.responses.create(
        model="default", input="Long.", stream=True, max_output_tokens=16
    )
    events = [event async for event in stream]
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"


async def test_an_upstream_failure_mid_stream_is_response_failed(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    mesh.upstream.enqueue(Reply(content="one two three four", break_after=2, usage=USAGE))
    stream = await sdk.responses.create(model="default", input="Break.", stream=True)
    events = [event async for event in stream]
    last = events[-1]
    assert last.type == "response.failed"
    assert last.response.status == "failed"
    assert last.response.error is not None
    assert last.response.error.message
    assert [event.sequence_number for event in events] == list(range(len(events)))


async def test_a_function_tool_round_trip(sdk: openai.AsyncOpenAI, mesh: Mesh) -> None:
    mesh.upstream.enqueue(
        Reply(
            content="",
            finish_reason="tool_calls",
            usage=USAGE,
            tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}],
        ),
        Reply(content="It is sunny in Paris.", usage=USAGE),
    )
    first = await sdk.responses.create(
        model="default", input="Weather in Paris?", tools=[WEATHER], tool_choice="auto"
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert (call.call_id, call.name) == ("call_1", "get_weather")
    assert json.loads(call.arguments) == {"city": "Paris"}
    sent = mesh.upstream.requests[-1].body
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather of a city.",
                "parameters": WEATHER["parameters"],
            },
        }
    ]
    second = await sdk.responses.create(
        model="default",
        previous_response_id=first.id,
        input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "sunny"}'}
        ],
        tools=[WEATHER],
    )
    assert second.output_text == "It is sunny in Paris."
    messages = mesh.upstream.requests[-1].body["messages"]
    assert messages[-2]["role"] == "assistant"
    assert messages[-2]["tool_calls"][0]["id"] == "call_1"
    assert messages[-1] == {"role": "tool", "content": '{"sky": "sunny"}', "tool_call_id": "call_1"}


async def test_a_streamed_tool_call_has_its_argument_events(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    mesh.upstream.enqueue(
        Reply(
            content="",
            finish_reason="tool_calls",
            usage=USAGE,
            tool_calls=[{"id": "call_9", "name": "get_weather", "arguments": '{"city": "Oslo"}'}],
        )
    )
    async with sdk.responses.stream(model="default", input="Oslo?", tools=[WEATHER]) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds
    assert [item.type for item in final.output] == ["function_call"]


async def test_a_json_schema_text_format_reaches_the_model(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    mesh.upstream.enqueue(Reply(content='{"city": "Paris"}', usage=USAGE))
    response = await sdk.responses.create(
        model="default",
        input="Capital of France?",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )
    assert json.loads(response.output_text) == {"city": "Paris"}
    assert mesh.upstream.requests[-1].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": schema, "strict": True},
    }


async def test_what_an_alias_cannot_do_is_a_400_naming_it(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as tools:
        await sdk.responses.create(model="extractive", input="Weather?", tools=[WEATHER])
    assert "does not support tools" in tools.value.message
    with pytest.raises(openai.BadRequestError) as schema:
        await sdk.responses.create(
            model="extractive",
            input="Capital?",
            text={"format": {"type": "json_schema", "name": "c", "schema": {"type": "object"}}},
        )
    assert "text.format" in schema.value.message
    with pytest.raises(openai.BadRequestError) as top_p:
        await sdk.responses.create(model="default", input="Hi", top_p=0.5)
    assert "top_p" in top_p.value.message
    with pytest.raises(openai.BadRequestError) as web:
        await sdk.responses.create(model="default", input="Hi", tools=[{"type": "web_search"}])
    assert "tools[0].type 'web_search'" in web.value.message
    image_input: Any = [
        {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}
    ]
    with pytest.raises(openai.BadRequestError) as image:
        await sdk.responses.create(model="default", input=image_input)
    assert "input[0].content[0].type 'input_image'" in image.value.message


async def test_another_tenant_cannot_read_continue_or_delete_a_response(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    mesh.upstream.enqueue(Reply(content="secret answer", usage=USAGE))
    mine = await sdk.responses.create(model="default", input="The code word is bluebird.")
    async with _client(mesh, "resp-intruder") as intruder:
        with pytest.raises(openai.NotFoundError):
            await intruder.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            await intruder.responses.input_items.list(mine.id)
        with pytest.raises(openai.NotFoundError):
            await intruder.responses.create(
                model="default", input="What was the code word?", previous_response_id=mine.id
            )
        with pytest.raises(openai.NotFoundError):
            await intruder.responses.delete(mine.id)
    # Another user of the same tenant is another owner, too.
    async with _client(mesh, "resp-t", subject="bob") as colleague:
        with pytest.raises(openai.NotFoundError):
            await colleague.responses.retrieve(mine.id)
    assert (await sdk.responses.retrieve(mine.id)).output_text == "secret answer"


async def test_store_false_keeps_nothing(sdk: openai.AsyncOpenAI, mesh: Mesh) -> None:
    mesh.upstream.enqueue(Reply(content="ephemeral", usage=USAGE))
    response = await sdk.responses.create(model="default", input="Hi", store=False)
    assert response.output_text == "ephemeral"
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(response.id)


async def test_a_client_that_leaves_a_stream_cancels_the_model_call(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    """The upstream holds its reply; the client goes away before the first event, and the
    model call is cancelled (the upstream sees its client leave) rather than run on."""
    mesh.upstream.enqueue(Reply(content="late", delay=5.0, usage=USAGE))
    request = asyncio.ensure_future(
        sdk.responses.create(model="default", input="Slow.", stream=True)
    )
    for _ in range(100):
        if mesh.upstream.requests:
            break
        await asyncio.sleep(0.02)
    assert mesh.upstream.requests, "the model was never called"
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    for _ in range(100):
        if mesh.upstream.disconnects:
            break
        await asyncio.sleep(0.05)
    assert mesh.upstream.disconnects == 1


FILE_SEARCH: Any = {"type": "file_search", "vector_store_ids": ["handbook"]}


async def test_file_search_answers_from_a_collection_with_a_valid_citation(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    """The router searches the caller's collection, gives the model the sources and checks
    the answer's [n] against them; the citation comes back as a file_citation."""
    async with httpx.AsyncClient(base_url=mesh.url) as http:
        ingest = await http.post(
            "/v1/collections/handbook/documents",
            json={"documents": [{"id": "leave-policy", "text": "Employees get 30 days of leave."}]},
            headers=editor("resp-t"),
        )
    assert ingest.status_code == 200, ingest.text
    answer = "Employees get 30 days of leave [1]."
    mesh.upstream.enqueue(Reply(content=answer, usage=USAGE))
    response = await sdk.responses.create(
        model="default",
        input="How many days of leave?",
        tools=[FILE_SEARCH],
        include=["file_search_call.results"],
    )
    assert "30 days of leave." in json.dumps(mesh.upstream.requests[-1].body["messages"])
    search, message = response.output
    assert search.type == "file_search_call"
    assert search.status == "completed"
    assert search.queries == ["How many days of leave?"]
    assert [(r.file_id, r.text) for r in search.results or ()] == [
        ("leave-policy", "Employees get 30 days of leave.")
    ]
    assert message.type == "message"
    text = message.content[0]
    assert text.type == "output_text"
    assert text.text == answer
    [citation] = text.annotations
    assert citation.type == "file_citation"
    assert citation.file_id == "leave-policy"
    assert citation.index == answer.index("[1]") + len("[1]")

    # Without include, the search item carries no results; streamed, every event is typed.
    mesh.upstream.enqueue(Reply(content=answer, usage=USAGE))
    stream = await sdk.responses.create(
        model="default", input="How many days of leave?", tools=[FILE_SEARCH], stream=True
    )
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[2:7] == [
        "response.output_item.added",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.output_item.done",
    ]
    assert "response.output_text.annotation.added" in kinds
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output[0].results is None  # type: ignore[union-attr]
    assert final.output_text == answer

    # Another tenant's collection of that name does not exist for it.
    async with _client(mesh, "resp-other") as other:
        with pytest.raises(openai.NotFoundError):
            await other.responses.create(
                model="default", input="How many days?", tools=[FILE_SEARCH]
            )


async def test_file_search_refuses_what_its_grounded_answer_cannot_honour(
    sdk: openai.AsyncOpenAI,
) -> None:
    two: Any = {"type": "file_search", "vector_store_ids": ["a", "b"]}
    with pytest.raises(openai.BadRequestError) as several:
        await sdk.responses.create(model="default", input="Q?", tools=[two])
    assert "exactly one vector store" in several.value.message
    with pytest.raises(openai.BadRequestError) as instructions:
        await sdk.responses.create(
            model="default", input="Q?", tools=[FILE_SEARCH], instructions="Be brief."
        )
    assert "instructions" in instructions.value.message


async def test_the_sdks_conversations_create_fails_with_a_clear_error(
    sdk: openai.AsyncOpenAI, mesh: Mesh
) -> None:
    """POST /v1/conversations stays aimesh's native route; OpenAI's Conversations API is
    refused with a message that says so, not with a validation error."""
    with pytest.raises(openai.BadRequestError) as bare:
        await sdk.conversations.create()
    assert "OpenAI's Conversations API" in bare.value.message
    assert "previous_response_id" in bare.value.message
    with pytest.raises(openai.BadRequestError) as shaped:
        await sdk.conversations.create(
            items=[{"type": "message", "role": "user", "content": "Hi"}], metadata={"a": "b"}
        )
    assert "OpenAI's Conversations API" in shaped.value.message
    # Without the SDK, OpenAI's members alone are recognized too; the native shape works.
    async with httpx.AsyncClient(base_url=mesh.url) as http:
        headers = {"Authorization": f"Bearer {token('resp-t', ['user'])}"}
        refused = await http.post("/v1/conversations", json={"metadata": {}}, headers=headers)
        assert refused.status_code == 400
        assert refused.json()["error"]["type"] == "invalid_request_error"
        native = await http.post("/v1/conversations", json={"title": "mine"}, headers=headers)
        assert native.status_code == 201, native.text
        assert native.json()["title"] == "mine"
