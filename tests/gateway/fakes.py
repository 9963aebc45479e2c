"""Small in-memory implementations of the backend contracts, served over real gRPC.

They behave like the real services in what the gateway relies on (per-tenant storage,
NOT_FOUND for unknown collections and models, streamed generation ending with
finish_reason and usage, answers citing retrieved chunks) and record what they were called
with, so tests can check the tenant and request id the gateway passed on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc
from aimesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from aimesh_common.channels import create_channel
from aimesh_common.errors import FailedPrecondition, InvalidArgument, NotFound, from_rpc_error
from aimesh_common.server import GrpcServer, build_grpc_server

CHUNK_WORDS = 8
# What the real retrieval service says to rerank=true without a reranker (the fake has none).
NO_RERANKER = "rerank was requested but this retrieval service has no reranker configured"
ALIASES = {"default": ("Echo model for tests", 4096), "fast": ("Shorter replies", 2048)}


@dataclass
class Call:
    """One recorded RPC: method, tenant and the request id from the metadata."""

    method: str
    tenant_id: str
    request_id: str | None
    request: Any
    traceparent: str | None = None


def _request_id(context: Any) -> str | None:
    return _metadata_value(context, "x-request-id")


def _metadata_value(context: Any, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return str(value)
    return None


@dataclass
class StoredDocument:
    text: str
    metadata: dict[str, Any]
    chunks: list[str]


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)

    def record(self, method: str, tenant_id: str, context: Any, request: Any) -> None:
        traceparent = _metadata_value(context, "traceparent")
        self.calls.append(Call(method, tenant_id, _request_id(context), request, traceparent))

    def last(self, method: str) -> Call:
        return next(call for call in reversed(self.calls) if call.method == method)


def _words(text: str) -> list[str]:
    return text.split()


def _matches(metadata: dict[str, Any], flt: dict[str, Any]) -> bool:
    """Equality filters only ({"field": value}); enough to see the filter passed through."""
    return all(metadata.get(key) == value for key, value in flt.items())


def _collection_info(name: str) -> retrieval_pb2.CollectionInfo:
    """A collection as the real service describes one created with its defaults."""
    return retrieval_pb2.CollectionInfo(
        name=name,
        chunking=retrieval_pb2.ChunkingSettings(chunk_size=200, chunk_overlap=32),
        index=retrieval_pb2.IndexSettings(index_type="FLAT"),
        full_text=True,
        dimension=384,
    )


class FakeRetrieval(retrieval_pb2_grpc.RetrievalServiceServicer):
    """Per-tenant, per-collection documents; word chunks; score = share of query words found."""

    def __init__(self) -> None:
        self.store: dict[tuple[str, str], dict[str, StoredDocument]] = {}
        self.collection_infos: dict[tuple[str, str], retrieval_pb2.CollectionInfo] = {}
        self.jobs: dict[tuple[str, str], retrieval_pb2.IngestJob] = {}
        # A new job is reported running this many times before it has succeeded (it ingests
        # at once either way); with job_error set, new jobs fail with it and store nothing.
        self.job_running_reads = 0
        self.job_error: str | None = None
        self._running_reads: dict[str, int] = {}
        self.recorder = Recorder()

    def _collection(self, tenant_id: str, name: str) -> dict[str, StoredDocument]:
        collection = self.store.get((tenant_id, name))
        if collection is None:
            raise NotFound(f"collection {name!r} does not exist")
        return collection

    async def UpsertDocuments(
        self, request: retrieval_pb2.UpsertDocumentsRequest, context: Any
    ) -> retrieval_pb2.UpsertDocumentsResponse:
        self.recorder.record("UpsertDocuments", request.tenant_id, context, request)
        for index, doc in enumerate(request.documents):
            if not doc.text.strip():
                raise InvalidArgument(f"documents[{index}].text is empty")
        collection = self.store.setdefault((request.tenant_id, request.collection), {})
        results = []
        for doc in request.documents:
            words = _words(doc.text)
            chunks = [
                " ".join(words[i : i + CHUNK_WORDS]) for i in range(0, len(words), CHUNK_WORDS)
            ]
            replaced = doc.id in collection
            collection[doc.id] = StoredDocument(
                doc.text, json_format.MessageToDict(doc.metadata), chunks
            )
            results.append(
                retrieval_pb2.UpsertResult(id=doc.id, chunks=len(chunks), replaced=replaced)
            )
        return retrieval_pb2.UpsertDocumentsResponse(results=results)

    async def DeleteDocument(
        self, request: retrieval_pb2.DeleteDocumentRequest, context: Any
    ) -> retrieval_pb2.DeleteDocumentResponse:
        self.recorder.record("DeleteDocument", request.tenant_id, context, request)
        collection = self._collection(request.tenant_id, request.collection)
        doc = collection.pop(request.document_id, None)
        if doc is None:
            raise NotFound(f"document {request.document_id!r} does not exist")
        return retrieval_pb2.DeleteDocumentResponse(deleted_chunks=len(doc.chunks))

    async def ListDocuments(
        self, request: retrieval_pb2.ListDocumentsRequest, context: Any
    ) -> retrieval_pb2.ListDocumentsResponse:
        self.recorder.record("ListDocuments", request.tenant_id, context, request)
        collection = self._collection(request.tenant_id, request.collection)
        limit = request.limit or 100
        documents = []
        for doc_id, doc in list(collection.items())[:limit]:
            metadata = struct_pb2.Struct()
            metadata.update(doc.metadata)
            documents.append(
                retrieval_pb2.DocumentInfo(id=doc_id, chunks=len(doc.chunks), metadata=metadata)
            )
        return retrieval_pb2.ListDocumentsResponse(documents=documents)

    async def CreateCollection(
        self, request: retrieval_pb2.CreateCollectionRequest, context: Any
    ) -> retrieval_pb2.CollectionInfo:
        self.recorder.record("CreateCollection", request.tenant_id, context, request)
        if request.rerank:
            raise FailedPrecondition(NO_RERANKER)
        self.store.setdefault((request.tenant_id, request.collection), {})
        info = _collection_info(request.collection)
        if request.HasField("chunking") and request.chunking.chunk_size:
            info.chunking.CopyFrom(request.chunking)
        if request.HasField("index") and request.index.index_type:
            info.index.CopyFrom(request.index)
        self.collection_infos[(request.tenant_id, request.collection)] = info
        return info

    async def ListCollections(
        self, request: retrieval_pb2.ListCollectionsRequest, context: Any
    ) -> retrieval_pb2.ListCollectionsResponse:
        self.recorder.record("ListCollections", request.tenant_id, context, request)
        names = sorted(name for tenant, name in self.store if tenant == request.tenant_id)
        return retrieval_pb2.ListCollectionsResponse(
            collections=[
                self.collection_infos.get((request.tenant_id, name)) or _collection_info(name)
                for name in names
            ]
        )

    async def DeleteCollection(
        self, request: retrieval_pb2.DeleteCollectionRequest, context: Any
    ) -> retrieval_pb2.DeleteCollectionResponse:
        self.recorder.record("DeleteCollection", request.tenant_id, context, request)
        if self.store.pop((request.tenant_id, request.collection), None) is None:
            raise NotFound(f"collection {request.collection!r} does not exist")
        return retrieval_pb2.DeleteCollectionResponse()

    async def UpdateCollectionSettings(
        self, request: retrieval_pb2.UpdateCollectionSettingsRequest, context: Any
    ) -> retrieval_pb2.CollectionInfo:
        self.recorder.record("UpdateCollectionSettings", request.tenant_id, context, request)
        if (request.tenant_id, request.collection) not in self.store:
            raise NotFound(f"collection {request.collection!r} does not exist")
        key = (request.tenant_id, request.collection)
        info = retrieval_pb2.CollectionInfo()
        info.CopyFrom(self.collection_infos.get(key) or _collection_info(request.collection))
        info.ClearField("fusion")
        if request.HasField("fusion"):
            info.fusion.CopyFrom(request.fusion)
        self.collection_infos[key] = info
        return info

    async def SubmitIngestJob(self, request_iterator: Any, context: Any) -> retrieval_pb2.IngestJob:
        """Ingests the streamed documents at once and reports a finished job."""
        tenant_id = collection = ""
        documents: list[retrieval_pb2.Document] = []
        async for part in request_iterator:
            tenant_id = part.tenant_id or tenant_id
            collection = part.collection or collection
            documents.extend(part.documents)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.job_error is not None:
            failed = retrieval_pb2.IngestJob(
                id=uuid.uuid4().hex,
                collection=collection,
                state=retrieval_pb2.JOB_STATE_FAILED,
                documents_total=len(documents),
                errors=[self.job_error],
                created_at=now,
                updated_at=now,
            )
            self.jobs[(tenant_id, failed.id)] = failed
            return failed
        upsert = retrieval_pb2.UpsertDocumentsRequest(
            tenant_id=tenant_id, collection=collection, documents=documents
        )
        reply = await self.UpsertDocuments(upsert, context)
        chunks = sum(result.chunks for result in reply.results)
        job = retrieval_pb2.IngestJob(
            id=uuid.uuid4().hex,
            collection=collection,
            state=retrieval_pb2.JOB_STATE_SUCCEEDED,
            documents_total=len(documents),
            documents_done=len(documents),
            chunks_total=chunks,
            chunks_embedded=chunks,
            created_at=now,
            updated_at=now,
        )
        self.jobs[(tenant_id, job.id)] = job
        if self.job_running_reads:
            self._running_reads[job.id] = self.job_running_reads
            running = retrieval_pb2.IngestJob()
            running.CopyFrom(job)
            running.state = retrieval_pb2.JOB_STATE_RUNNING
            return running
        return job

    async def GetIngestJob(
        self, request: retrieval_pb2.GetIngestJobRequest, context: Any
    ) -> retrieval_pb2.IngestJob:
        self.recorder.record("GetIngestJob", request.tenant_id, context, request)
        job = self.jobs.get((request.tenant_id, request.job_id))
        if job is None:
            raise NotFound(f"job {request.job_id!r} does not exist")
        if self._running_reads.get(job.id, 0) > 0:
            self._running_reads[job.id] -= 1
            running = retrieval_pb2.IngestJob()
            running.CopyFrom(job)
            running.state = retrieval_pb2.JOB_STATE_RUNNING
            return running
        return job

    async def Search(
        self, request: retrieval_pb2.SearchRequest, context: Any
    ) -> retrieval_pb2.SearchResponse:
        self.recorder.record("Search", request.tenant_id, context, request)
        if request.rerank:
            raise FailedPrecondition(NO_RERANKER)
        collection = self._collection(request.tenant_id, request.collection)
        query = {word.lower().strip("?.,!") for word in _words(request.query)}
        flt = json_format.MessageToDict(request.filter) if request.HasField("filter") else {}
        scored: list[retrieval_pb2.ScoredChunk] = []
        for doc_id, doc in collection.items():
            if not _matches(doc.metadata, flt):
                continue
            for index, chunk in enumerate(doc.chunks):
                found = {word.lower().strip("?.,!") for word in _words(chunk)} & query
                metadata = struct_pb2.Struct()
                metadata.update(doc.metadata)
                scored.append(
                    retrieval_pb2.ScoredChunk(
                        document_id=doc_id,
                        chunk_id=f"{doc_id}#{index}",
                        chunk_index=index,
                        text=chunk,
                        score=len(found) / max(len(query), 1),
                        metadata=metadata,
                    )
                )
        scored.sort(key=lambda chunk: chunk.score, reverse=True)
        return retrieval_pb2.SearchResponse(chunks=scored[: request.top_k or 5])


def _usage(prompt: str, completion: str) -> llm_pb2.Usage:
    prompt_tokens, completion_tokens = len(_words(prompt)), len(_words(completion))
    return llm_pb2.Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        estimated=True,
    )


# What the fake reports as the answering provider kind (the real router: "local", "openai").
FAKE_PROVIDER = "fake"


def _alias(model: str) -> str:
    alias = model or "default"
    if alias not in ALIASES:
        raise NotFound(f"unknown model alias {alias!r}")
    return alias


class _StreamingAndConversations:
    """The router's streamed tasks (built on the fake's own Summarize and Answer) and
    in-memory conversations; the real ones are tested against the real router in
    tests/llm_router and api/routes/test_conversations.py."""

    Summarize: Callable[[Any, Any], Awaitable[Any]]
    Answer: Callable[[Any, Any], Awaitable[Any]]

    @property
    def conversations(self) -> dict[str, llm_pb2.Conversation]:
        stored: dict[str, llm_pb2.Conversation] = vars(self).setdefault("_conversations", {})
        return stored

    @property
    def owners(self) -> dict[str, tuple[str, str]]:
        stored: dict[str, tuple[str, str]] = vars(self).setdefault("_owners", {})
        return stored

    async def StreamSummarize(
        self, request: llm_pb2.SummarizeRequest, context: Any
    ) -> AsyncIterator[llm_pb2.StreamEvent]:
        reply = await self.Summarize(request, context)
        yield llm_pb2.StreamEvent(delta=reply.summary)
        yield llm_pb2.StreamEvent(usage=reply.usage)
        yield llm_pb2.StreamEvent(
            done=llm_pb2.StreamDone(
                model=reply.model,
                finish_reason="stop",
                provider=reply.provider,
                prompt_version=reply.prompt_version,
            )
        )

    async def StreamAnswer(
        self, request: llm_pb2.AnswerRequest, context: Any
    ) -> AsyncIterator[llm_pb2.StreamEvent]:
        reply = await self.Answer(request, context)
        yield llm_pb2.StreamEvent(sources=llm_pb2.SourceList(items=reply.citations))
        yield llm_pb2.StreamEvent(delta=reply.answer)
        yield llm_pb2.StreamEvent(citations=llm_pb2.SourceList(items=reply.citations))
        yield llm_pb2.StreamEvent(usage=reply.usage)
        yield llm_pb2.StreamEvent(
            done=llm_pb2.StreamDone(
                model=reply.model,
                finish_reason="stop",
                provider=reply.provider,
                prompt_version=reply.prompt_version,
            )
        )

    def _owned(self, tenant_id: str, user_id: str, conversation_id: str) -> llm_pb2.Conversation:
        """The caller's conversation; a deleted one is gone for its owner too."""
        if self.owners.get(conversation_id) != (tenant_id, user_id):
            raise NotFound(f"conversation {conversation_id!r} does not exist")
        conversation = self.conversations[conversation_id]
        if conversation.deleted_at:
            raise NotFound(f"conversation {conversation_id!r} does not exist")
        return conversation

    async def CreateConversation(
        self, request: llm_pb2.CreateConversationRequest, context: Any
    ) -> llm_pb2.Conversation:
        now = time.time()
        conversation = llm_pb2.Conversation(
            id=uuid.uuid4().hex,
            model=_alias(request.model),
            collection=request.collection,
            title=request.title,
            created_at=now,
            updated_at=now,
            user_id=request.user_id,
        )
        self.conversations[conversation.id] = conversation
        self.owners[conversation.id] = (request.tenant_id, request.user_id)
        return conversation

    async def GetConversation(
        self, request: llm_pb2.GetConversationRequest, context: Any
    ) -> llm_pb2.Conversation:
        return self._owned(request.tenant_id, request.user_id, request.conversation_id)

    def _summary(self, conversation: llm_pb2.Conversation) -> llm_pb2.Conversation:
        """A conversation in a listing: its metadata, not its messages (a deleted one keeps
        the count it had)."""
        summary = llm_pb2.Conversation()
        summary.CopyFrom(conversation)
        del summary.messages[:]
        if not conversation.deleted_at:
            summary.message_count = len(conversation.messages)
        return summary

    async def ListConversations(
        self, request: llm_pb2.ListConversationsRequest, context: Any
    ) -> llm_pb2.ListConversationsResponse:
        owner = (request.tenant_id, request.user_id)
        mine = [
            c
            for i, c in self.conversations.items()
            if self.owners.get(i) == owner and not c.deleted_at
        ]
        mine.sort(key=lambda c: c.created_at, reverse=True)
        return llm_pb2.ListConversationsResponse(
            conversations=[self._summary(c) for c in mine[: request.limit or 50]]
        )

    async def ListTenantConversations(
        self, request: llm_pb2.ListTenantConversationsRequest, context: Any
    ) -> llm_pb2.ListTenantConversationsResponse:
        """The tenant's conversations (the deleted ones too with include_deleted), most
        recently active first, without messages."""
        found = [
            self._summary(c)
            for i, c in self.conversations.items()
            if self.owners[i][0] == request.tenant_id
            and request.user_id in ("", self.owners[i][1])
            and (request.include_deleted or not c.deleted_at)
        ]
        found.sort(key=lambda c: (c.updated_at, c.id), reverse=True)
        return llm_pb2.ListTenantConversationsResponse(conversations=found[: request.limit or 100])

    async def DeleteConversation(
        self, request: llm_pb2.DeleteConversationRequest, context: Any
    ) -> llm_pb2.DeleteConversationResponse:
        """The messages go; the metadata stays, marked deleted, for the tenant's admins."""
        conversation = self._owned(request.tenant_id, request.user_id, request.conversation_id)
        conversation.message_count = len(conversation.messages)
        del conversation.messages[:]
        conversation.deleted_at = time.time()
        return llm_pb2.DeleteConversationResponse()

    @property
    def stored_responses(self) -> dict[str, llm_pb2.StoredResponse]:
        stored: dict[str, llm_pb2.StoredResponse] = vars(self).setdefault("_responses", {})
        return stored

    async def StoreResponse(
        self, request: llm_pb2.StoredResponse, context: Any
    ) -> llm_pb2.StoredResponse:
        if request.id in self.stored_responses:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"response {request.id!r} exists")
        stored = llm_pb2.StoredResponse()
        stored.CopyFrom(request)
        stored.expires_at = time.time() + 3600
        self.stored_responses[request.id] = stored
        return stored

    def _owned_response(self, request: llm_pb2.GetResponseRequest) -> llm_pb2.StoredResponse:
        stored = self.stored_responses.get(request.response_id)
        if stored is None or (stored.tenant_id, stored.user_id) != (
            request.tenant_id,
            request.user_id,
        ):
            raise NotFound(f"response {request.response_id!r} does not exist")
        return stored

    async def GetResponse(
        self, request: llm_pb2.GetResponseRequest, context: Any
    ) -> llm_pb2.StoredResponse:
        return self._owned_response(request)

    async def DeleteResponse(
        self, request: llm_pb2.GetResponseRequest, context: Any
    ) -> llm_pb2.DeleteResponseResponse:
        self._owned_response(request)
        del self.stored_responses[request.response_id]
        return llm_pb2.DeleteResponseResponse()

    async def SendMessage(
        self, request: llm_pb2.SendMessageRequest, context: Any
    ) -> AsyncIterator[llm_pb2.StreamEvent]:
        conversation = self._owned(request.tenant_id, request.user_id, request.conversation_id)
        reply = f"echo: {request.content}"
        conversation.messages.extend(
            [
                llm_pb2.ChatMessage(role="user", content=request.content),
                llm_pb2.ChatMessage(role="assistant", content=reply),
            ]
        )
        conversation.updated_at = time.time()
        yield llm_pb2.StreamEvent(delta=reply)
        yield llm_pb2.StreamEvent(usage=_usage(request.content, reply))
        yield llm_pb2.StreamEvent(
            done=llm_pb2.StreamDone(
                model=conversation.model,
                finish_reason="stop",
                provider=FAKE_PROVIDER,
                prompt_version="chat/v1",
            )
        )


class FakeRouter(_StreamingAndConversations, llm_pb2_grpc.LLMRouterServiceServicer):
    """Echoes the last user message word by word; answers by quoting retrieved chunks."""

    def __init__(self, retrieval_addr: str) -> None:
        self.recorder = Recorder()
        self.channel = create_channel(retrieval_addr)
        self.retrieval = retrieval_pb2_grpc.RetrievalServiceStub(self.channel)

    async def Generate(
        self, request: llm_pb2.GenerateRequest, context: Any
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        self.recorder.record("Generate", request.tenant_id, context, request)
        alias = _alias(request.model)
        if not request.messages:
            raise InvalidArgument("messages is empty")
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        words = ["echo:", *_words(last_user)]
        finish_reason = "stop"
        if request.max_tokens and len(words) > request.max_tokens:
            words, finish_reason = words[: request.max_tokens], "length"
        for index, word in enumerate(words):
            yield llm_pb2.GenerateResponse(
                delta=word if index == 0 else f" {word}",
                model=alias,
                provider=FAKE_PROVIDER,
                prompt_version="chat/v1",
            )
        prompt = " ".join(m.content for m in request.messages)
        yield llm_pb2.GenerateResponse(
            model=alias,
            finish_reason=finish_reason,
            usage=_usage(prompt, " ".join(words)),
            provider=FAKE_PROVIDER,
            prompt_version="chat/v1",
        )

    async def Summarize(
        self, request: llm_pb2.SummarizeRequest, context: Any
    ) -> llm_pb2.SummarizeResponse:
        self.recorder.record("Summarize", request.tenant_id, context, request)
        alias = _alias(request.model)
        if not request.text.strip():
            raise InvalidArgument("text is empty")
        words = _words(request.text)[: request.max_words or 12]
        summary = " ".join(words)
        if request.style == "bullets":
            summary = "- " + summary
        return llm_pb2.SummarizeResponse(
            summary=summary,
            model=alias,
            usage=_usage(request.text, summary),
            provider=FAKE_PROVIDER,
            prompt_version="summarize/v1",
        )

    async def Answer(self, request: llm_pb2.AnswerRequest, context: Any) -> llm_pb2.AnswerResponse:
        self.recorder.record("Answer", request.tenant_id, context, request)
        alias = _alias(request.model)
        search = retrieval_pb2.SearchRequest(
            tenant_id=request.tenant_id,
            collection=request.collection,
            query=request.question,
            top_k=request.top_k or 5,
        )
        if request.HasField("filter"):
            search.filter.CopyFrom(request.filter)
        if request.HasField("rerank"):
            search.rerank = request.rerank
        try:
            found = await self.retrieval.Search(search, timeout=10)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise from_rpc_error(error, "retrieval") from None
            raise
        cited = [chunk for chunk in found.chunks if chunk.score > 0]
        if not cited:
            answer = "I don't know."
        else:
            answer = " ".join(f"{chunk.text} [{n}]" for n, chunk in enumerate(cited, start=1))
        return llm_pb2.AnswerResponse(
            answer=answer,
            citations=[
                llm_pb2.Citation(
                    source=n,
                    document_id=chunk.document_id,
                    chunk_id=chunk.chunk_id,
                    text=chunk.text,
                    score=chunk.score,
                    metadata=chunk.metadata,
                )
                for n, chunk in enumerate(cited, start=1)
            ],
            model=alias,
            usage=_usage(request.question, answer),
            provider=FAKE_PROVIDER,
            prompt_version="qa/v1",
        )

    async def ListModels(
        self, request: llm_pb2.ListModelsRequest, context: Any
    ) -> llm_pb2.ListModelsResponse:
        self.recorder.record("ListModels", "", context, request)
        return llm_pb2.ListModelsResponse(
            models=[
                llm_pb2.ModelInfo(
                    id=alias,
                    description=description,
                    context_window=window,
                    default_for=["chat", "summarize", "qa"] if alias == "default" else [],
                )
                for alias, (description, window) in ALIASES.items()
            ]
        )


class FailingRouter(_StreamingAndConversations, llm_pb2_grpc.LLMRouterServiceServicer):
    """Every call fails with ``self.error`` (set by the test); the interceptor maps it.

    ``error`` may also be a callable ``(context) -> awaitable`` for codes that have no
    domain error class (PERMISSION_DENIED, UNAUTHENTICATED): it aborts the call itself.
    """

    def __init__(self) -> None:
        self.error: BaseException | Callable[[Any], Any] = NotFound("nothing here")
        self.stream_before_error: list[str] = []

    async def _fail(self, context: Any) -> None:
        if isinstance(self.error, BaseException):
            raise self.error
        await self.error(context)

    async def Generate(
        self, request: llm_pb2.GenerateRequest, context: Any
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        for delta in self.stream_before_error:
            yield llm_pb2.GenerateResponse(delta=delta, model="default")
        await self._fail(context)

    async def Summarize(
        self, request: llm_pb2.SummarizeRequest, context: Any
    ) -> llm_pb2.SummarizeResponse:
        await self._fail(context)
        raise AssertionError("unreachable")

    async def Answer(self, request: llm_pb2.AnswerRequest, context: Any) -> llm_pb2.AnswerResponse:
        await self._fail(context)
        raise AssertionError("unreachable")

    async def ListModels(
        self, request: llm_pb2.ListModelsRequest, context: Any
    ) -> llm_pb2.ListModelsResponse:
        await self._fail(context)
        raise AssertionError("unreachable")


def serve_retrieval(servicer: retrieval_pb2_grpc.RetrievalServiceServicer) -> GrpcServer:
    return build_grpc_server(
        host="127.0.0.1",
        port=0,
        register=lambda server: retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(
            servicer, server
        ),
        service_names=["aimesh.retrieval.v1.RetrievalService"],
    )


def serve_router(servicer: llm_pb2_grpc.LLMRouterServiceServicer) -> GrpcServer:
    return build_grpc_server(
        host="127.0.0.1",
        port=0,
        register=lambda server: llm_pb2_grpc.add_LLMRouterServiceServicer_to_server(
            servicer, server
        ),
        service_names=["aimesh.llm.v1.LLMRouterService"],
    )


def serve_health_only(service_name: str) -> GrpcServer:
    """A server that only answers grpc.health.v1 (the gateway never calls embedding itself)."""
    return build_grpc_server(
        host="127.0.0.1", port=0, register=lambda server: None, service_names=[service_name]
    )
