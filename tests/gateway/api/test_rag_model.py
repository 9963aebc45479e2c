"""``rag:<collection>`` through the OpenAI API: citations in structure (annotations) in full
and streamed replies, the answer streamed as it is generated, the answering alias and the
retrieval settings chosen through ``extra_body``; with the ``openai`` SDK and LangChain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from google.protobuf import struct_pb2
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessageParam

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.api.rag_model import cited_spans, sources_block
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import bearer, editor, token
from tests.gateway.live_stack import Stack, real_router_stack
from tests.llm_router.openai_server import Reply

QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "How many days of leave?"}
]


def _citation(source: int, document_id: str, text: str, title: str = "") -> llm_pb2.Citation:
    metadata = struct_pb2.Struct()
    if title:
        metadata.update({"title": title})
    return llm_pb2.Citation(
        source=source,
        document_id=document_id,
        chunk_id=f"{document_id}#0",
        text=text,
        metadata=metadata,
    )


def test_each_marker_cites_the_sentence_it_closes() -> None:
    answer = "Leave is 30 days [1]. Sick leave is separate. It needs a note. [2] Unknown [7]."
    citations = [
        _citation(1, "leave", "Employees get 30 days of leave.", title="Leave policy"),
        _citation(2, "sick", "A doctor's note is needed."),
    ]
    spans = cited_spans(answer, citations, "handbook")
    assert [answer[a.url_citation.start_index : a.url_citation.end_index] for a in spans] == [
        "Leave is 30 days [1]",
        "It needs a note. [2]",
    ]
    first, second = (span.url_citation for span in spans)
    assert (first.title, first.document_id, first.chunk_id) == ("Leave policy", "leave", "leave#0")
    assert first.url == "aimesh://handbook/leave#leave#0"
    assert first.text == "Employees get 30 days of leave."
    assert second.title == "sick"  # no title metadata: the document id
    assert sources_block(citations).splitlines()[2:] == [
        "Sources:",
        "[1] leave: Employees get 30 days of leave.",
        "[2] sick: A doctor's note is needed.",
    ]
    assert sources_block([]) == ""


async def _handbook(client: httpx.AsyncClient) -> str:
    tenant = f"rag-{uuid.uuid4().hex[:8]}"
    ingest = await client.post(
        "/v1/collections/handbook/documents",
        json={
            "documents": [
                {
                    "id": "leave-policy",
                    "text": "Employees get 30 days of leave.",
                    "metadata": {"title": "Leave policy"},
                }
            ]
        },
        headers=editor(tenant),
    )
    assert ingest.status_code in (200, 201), ingest.text
    return tenant


async def test_the_sdk_reads_annotations_whole_and_streamed(
    live_gateway: str, client: httpx.AsyncClient
) -> None:
    tenant = await _handbook(client)
    sdk = openai.AsyncOpenAI(
        base_url=f"{live_gateway}/v1", api_key=token(tenant, ["user"]), max_retries=0
    )
    async with sdk:
        completion = await sdk.chat.completions.create(model="rag:handbook", messages=QUESTION)
        message = completion.choices[0].message
        content = message.content or ""
        assert content.startswith("Employees get 30 days of leave. [1]")
        assert content.endswith("Sources:\n[1] leave-policy: Employees get 30 days of leave.")
        assert message.annotations is not None
        [annotation] = message.annotations
        cited = annotation.url_citation
        assert annotation.type == "url_citation"
        assert content[cited.start_index : cited.end_index] == (
            "Employees get 30 days of leave. [1]"
        )
        assert cited.title == "Leave policy"
        assert cited.url == "aimesh://handbook/leave-policy#leave-policy#0"
        extra = cited.model_extra or {}
        assert (extra["document_id"], extra["chunk_id"]) == ("leave-policy", "leave-policy#0")
        assert extra["text"] == "Employees get 30 days of leave."

        stream = await sdk.chat.completions.create(
            model="rag:handbook",
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == content
        streamed_annotations = [
            item
            for c in chunks
            if c.choices
            for item in (c.choices[0].delta.model_extra or {}).get("annotations") or []
        ]
        assert streamed_annotations == [annotation.model_dump()]
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.total_tokens == completion.usage.total_tokens  # type: ignore[union-attr]

        # Without the text block: the content is the answer alone, the annotations stay.
        bare = await sdk.chat.completions.create(
            model="rag:handbook",
            messages=QUESTION,
            extra_body={"rag": {"sources_in_content": False, "model": "fast", "top_k": 3}},
        )
        assert bare.choices[0].message.content == "Employees get 30 days of leave. [1]"
        assert bare.choices[0].message.annotations == message.annotations
        assert bare.model == "rag:handbook"


async def test_rag_options_are_checked(live_gateway: str, client: httpx.AsyncClient) -> None:
    tenant = await _handbook(client)
    headers = bearer(token(tenant, ["user"]))
    base: dict[str, Any] = {"messages": QUESTION}
    async with httpx.AsyncClient(base_url=live_gateway) as http:
        plain = await http.post(
            "/v1/chat/completions",
            json={**base, "model": "default", "rag": {"top_k": 3}},
            headers=headers,
        )
        assert plain.status_code == 400
        assert "rag:" in plain.json()["detail"]
        for bad in ({"top_k": 0}, {"top_k": 500}, {"unknown": 1}, {"filter": "x"}, {"top_k": True}):
            reply = await http.post(
                "/v1/chat/completions",
                json={**base, "model": "rag:handbook", "rag": bad},
                headers=headers,
            )
            assert reply.status_code == 422, (bad, reply.text)
        unknown = await http.post(
            "/v1/chat/completions",
            json={**base, "model": "rag:handbook", "rag": {"model": "gpt-9"}},
            headers=headers,
        )
        assert unknown.status_code == 404
        assert "gpt-9" in unknown.json()["detail"]
        # rerank reaches retrieval: the fake mesh has no reranker, so asking for one is 409.
        rerank = await http.post(
            "/v1/chat/completions",
            json={**base, "model": "rag:handbook", "rag": {"rerank": True}},
            headers=headers,
        )
        assert rerank.status_code == 409, rerank.text
        assert "no reranker" in rerank.json()["detail"]
        # A filter that matches nothing: no sources, so nothing is cited.
        none = await http.post(
            "/v1/chat/completions",
            json={**base, "model": "rag:handbook", "rag": {"filter": {"title": "nope"}}},
            headers=headers,
        )
        assert none.status_code == 200, none.text
        assert (
            "annotations" not in none.json()["choices"][0]["message"]
            or not (none.json()["choices"][0]["message"]["annotations"])
        )


async def test_langchain_chat_openai_gets_the_answer_and_its_sources(
    live_gateway: str, client: httpx.AsyncClient
) -> None:
    tenant = await _handbook(client)
    llm = ChatOpenAI(
        model="rag:handbook",
        base_url=f"{live_gateway}/v1",
        api_key=token(tenant, ["user"]),
        max_retries=0,
    )
    reply = await llm.ainvoke([HumanMessage("How many days of leave?")])
    assert "30 days of leave. [1]" in str(reply.content)
    parts = [str(chunk.content) async for chunk in llm.astream([HumanMessage("Leave?")])]
    assert "Sources:" in "".join(parts)


@pytest.fixture(scope="module")
async def stack(
    fake_mesh: FakeMesh, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with real_router_stack(fake_mesh, tmp_path_factory.mktemp("router-rag")) as s:
        s.retrieval.put("acme", "kb", [("d1", "Paris is in France.")])
        yield s


async def test_a_streamed_rag_answer_arrives_token_by_token(stack: Stack) -> None:
    stack.upstream.reset()
    stack.upstream.enqueue(Reply(content="Paris is in France [1].", chunk_delay=0.05))
    sdk = openai.AsyncOpenAI(
        base_url=f"{stack.live_url}/v1", api_key=token("acme", ["user"]), max_retries=0
    )
    async with sdk:
        stream = await sdk.chat.completions.create(
            model="rag:kb", messages=[{"role": "user", "content": "Where is Paris?"}], stream=True
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    words = [piece for piece in pieces if piece and "Sources:" not in piece]
    assert len(words) >= 4  # the answer's words, as the model produced them
    assert "".join(words) == "Paris is in France [1]."
    assert any(piece and "Sources:" in piece for piece in pieces)
