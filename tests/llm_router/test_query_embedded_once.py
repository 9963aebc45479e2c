"""One question, one embedding: across the real retrieval service (Milvus Lite) and the
router's local provider, both on the real embedding server, an ask embeds its question
once.

Retrieval embeds the query for its search and hands the vector back
(SearchRequest.return_query_vector); the local provider quotes with that vector instead
of embedding the question again. Every Embed call of both services is recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc
from aimesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from aimesh_common.embedding_client import EmbeddingClient
from aimesh_llm_router.config import Settings
from aimesh_llm_router.server import build_dependencies, create_server
from aimesh_retrieval.config import Settings as RetrievalSettings
from aimesh_retrieval.server import create_server as create_retrieval_server
from aimesh_retrieval.store import MilvusStore
from tests.common.embed_calls import EmbedCalls, recorded_channel
from tests.llm_router.messages import has_content

TENANT, COLLECTION, USER = "t1", "towers", "u1"
QUESTION = "When was the Eiffel Tower completed?"
TEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. "
    "The tower was completed in 1889 as the entrance to the World's Fair. "
    "It is 330 metres tall."
)


@dataclass
class Mesh:
    router: llm_pb2_grpc.LLMRouterServiceAsyncStub
    retrieval_calls: EmbedCalls
    router_calls: EmbedCalls

    def embedded(self, text: str) -> int:
        """How many Embed calls, of both services, carried ``text``."""
        calls = self.retrieval_calls.containing(text) + self.router_calls.containing(text)
        return len(calls)

    def clear(self) -> None:
        self.retrieval_calls.calls.clear()
        self.router_calls.calls.clear()


@pytest.fixture(scope="module")
async def mesh(
    embedding_addr: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    data: Path = tmp_path_factory.mktemp("embedded-once")
    retrieval_settings = RetrievalSettings(
        host="127.0.0.1", port=0, metrics_port=None, data_dir=data / "retrieval"
    )
    store = MilvusStore.open(retrieval_settings)
    retrieval_embedding, retrieval_calls = recorded_channel(embedding_addr)
    retrieval = create_retrieval_server(
        retrieval_settings, store, EmbeddingClient(retrieval_embedding, timeout=30)
    )
    await retrieval.start()
    retrieval_addr = f"127.0.0.1:{retrieval.port}"
    async with grpc.aio.insecure_channel(retrieval_addr) as channel:
        upsert = retrieval_pb2.UpsertDocumentsRequest(
            tenant_id=TENANT,
            collection=COLLECTION,
            documents=[retrieval_pb2.Document(id="eiffel", text=TEXT)],
        )
        await retrieval_pb2_grpc.RetrievalServiceStub(channel).UpsertDocuments(upsert)

    router_embedding, router_calls = recorded_channel(embedding_addr)
    settings = Settings(
        port=0,
        host="127.0.0.1",
        metrics_port=None,
        llm_provider="local",
        retrieval_service_addr=retrieval_addr,
        data_dir=data / "router",
    )
    deps = build_dependencies(settings, embedding_channel=router_embedding)
    router = create_server(settings, deps)
    await router.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        yield Mesh(llm_pb2_grpc.LLMRouterServiceStub(channel), retrieval_calls, router_calls)
    await router.stop(0)
    await router_embedding.close()
    await retrieval.stop(0)
    await retrieval_embedding.close()
    await store.close()


ASK = llm_pb2.AnswerRequest(question=QUESTION, collection=COLLECTION, tenant_id=TENANT)


async def test_answer_embeds_the_question_once(mesh: Mesh) -> None:
    mesh.clear()
    reply = await mesh.router.Answer(ASK)
    assert "1889" in reply.answer
    assert mesh.embedded(QUESTION) == 1
    assert mesh.router_calls.calls  # the provider still embedded the sources' sentences


async def test_stream_answer_embeds_the_question_once(mesh: Mesh) -> None:
    mesh.clear()
    events = [event async for event in mesh.router.StreamAnswer(ASK) if has_content(event)]
    assert "1889" in "".join(event.delta for event in events)
    assert mesh.embedded(QUESTION) == 1


async def test_a_grounded_conversation_turn_embeds_the_message_once(mesh: Mesh) -> None:
    conversation = await mesh.router.CreateConversation(
        llm_pb2.CreateConversationRequest(tenant_id=TENANT, user_id=USER, collection=COLLECTION)
    )
    mesh.clear()
    turn = llm_pb2.SendMessageRequest(
        tenant_id=TENANT, user_id=USER, conversation_id=conversation.id, content=QUESTION
    )
    events = [event async for event in mesh.router.SendMessage(turn) if has_content(event)]
    assert "1889" in "".join(event.delta for event in events)
    assert mesh.embedded(QUESTION) == 1
