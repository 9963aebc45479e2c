"""OpenAI clients pointed at the gateway: the SDK's error objects and LangChain's ChatOpenAI."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.gateway.helpers import ADMIN_KEY, editor, token


async def test_sdk_reads_openai_shaped_errors(live_gateway: str) -> None:
    sdk = openai.AsyncOpenAI(base_url=f"{live_gateway}/v1", api_key=ADMIN_KEY, max_retries=0)
    async with sdk:
        with pytest.raises(openai.NotFoundError) as caught:
            await sdk.chat.completions.create(
                model="gpt-9", messages=[{"role": "user", "content": "hi"}]
            )
        error = caught.value
        assert error.type == "not_found_error"
        assert "gpt-9" in error.message
        with pytest.raises(openai.UnprocessableEntityError) as invalid:
            await sdk.chat.completions.create(model="default", messages=[])
        assert invalid.value.type == "invalid_request_error"
    bad = openai.AsyncOpenAI(base_url=f"{live_gateway}/v1", api_key="wrong-key", max_retries=0)
    async with bad:
        with pytest.raises(openai.AuthenticationError) as denied:
            await bad.models.list()
        assert denied.value.type == "authentication_error"


async def test_langchain_chat_openai_invoke_and_stream(live_gateway: str) -> None:
    llm = ChatOpenAI(
        model="default",
        base_url=f"{live_gateway}/v1",
        api_key=token(roles=["user"]),
        temperature=0,
        max_retries=0,
    )
    reply = await llm.ainvoke([HumanMessage("Say hello.")])
    assert reply.content == "echo: Say hello."
    parts = [str(chunk.content) async for chunk in llm.astream([HumanMessage("stream me")])]
    assert "".join(parts) == "echo: stream me"
    assert len([p for p in parts if p]) > 1  # really streamed, not one block


async def test_rag_model_answers_from_a_collection_with_citations(
    live_gateway: str, client: httpx.AsyncClient
) -> None:
    tenant = f"rag-{uuid.uuid4().hex[:8]}"
    ingest = await client.post(
        "/v1/collections/handbook/documents",
        json={"documents": [{"id": "leave-policy", "text": "Employees get 30 days of leave."}]},
        headers=editor(tenant),
    )
    assert ingest.status_code in (200, 201), ingest.text
    sdk = openai.AsyncOpenAI(
        base_url=f"{live_gateway}/v1", api_key=token(tenant, ["user"]), max_retries=0
    )
    async with sdk:
        question: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": "How many days of leave?"}
        ]
        completion = await sdk.chat.completions.create(model="rag:handbook", messages=question)
        content = completion.choices[0].message.content or ""
        assert "[1]" in content
        assert "Sources:" in content
        assert "[1] leave-policy: Employees get 30 days of leave." in content
        stream = await sdk.chat.completions.create(
            model="rag:handbook", messages=question, stream=True
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert streamed == content
        # Another tenant's collection of the same name does not exist for this caller.
        other = openai.AsyncOpenAI(
            base_url=f"{live_gateway}/v1", api_key=token("someone-else", ["user"]), max_retries=0
        )
        async with other:
            with pytest.raises(openai.NotFoundError):
                await other.chat.completions.create(model="rag:handbook", messages=question)
        with pytest.raises(openai.UnprocessableEntityError):
            await sdk.chat.completions.create(model="rag:../etc", messages=question)
