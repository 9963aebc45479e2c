"""EmbeddingService: validates requests, tokenizes them and hands them to the batcher."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_common.errors import FailedPrecondition, InvalidArgument
from aimesh_common.memory import IdleTrim
from aimesh_embedding import metrics
from aimesh_embedding.batcher import Batcher
from aimesh_embedding.config import Settings
from aimesh_embedding.model import Encoder, TokenIds, shorten
from aimesh_embedding.rerank import CrossEncoderScorer, PairIds

log = logging.getLogger("aimesh.embedding")

_T = TypeVar("_T")

# Calls with more text than this are tokenized on a helper thread rather than on the event
# loop (a few short sentences take microseconds; 256 inputs of 32k characters take seconds).
INLINE_TOKENIZE_CHARS = 4096


class UndecodableRequest:
    """Bytes that are no valid EmbedRequest, most often an input that is not valid UTF-8.

    protobuf rejects such strings while parsing, before any handler runs, and grpc would
    answer UNKNOWN; decoding through :func:`decode_embed_request` lets Embed answer
    INVALID_ARGUMENT with a readable message instead.
    """

    def __init__(self, error: str) -> None:
        self.error = error


def decode_embed_request(data: bytes) -> embedding_pb2.EmbedRequest | UndecodableRequest:
    try:
        return embedding_pb2.EmbedRequest.FromString(data)
    except DecodeError as error:
        return UndecodableRequest(str(error))


def decode_rerank_request(data: bytes) -> embedding_pb2.RerankRequest | UndecodableRequest:
    try:
        return embedding_pb2.RerankRequest.FromString(data)
    except DecodeError as error:
        return UndecodableRequest(str(error))


def _undecodable(request: UndecodableRequest, message: str, not_utf8: str) -> InvalidArgument:
    if "UTF-8" in request.error:
        return InvalidArgument(not_utf8)
    return InvalidArgument(f"the request is not a valid {message}: {request.error}")


EmbedContext = grpc.aio.ServicerContext[embedding_pb2.EmbedRequest, embedding_pb2.EmbedResponse]
InfoContext = grpc.aio.ServicerContext[embedding_pb2.InfoRequest, embedding_pb2.InfoResponse]
RerankContext = grpc.aio.ServicerContext[embedding_pb2.RerankRequest, embedding_pb2.RerankResponse]


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    """Serves one encoder through a dynamic batcher (see :mod:`aimesh_embedding.batcher`).

    Logs carry counts and timings, never the input text.
    """

    def __init__(
        self, encoder: Encoder, settings: Settings, reranker: CrossEncoderScorer | None = None
    ) -> None:
        self._encoder = encoder
        self._reranker = reranker
        self._rerank_batcher: Batcher[PairIds] | None = None
        if reranker is not None:
            # Its own batcher (and model thread): the same packing, its own metrics.
            self._rerank_batcher = Batcher(
                reranker.score_pairs,
                1,
                max_batch_tokens=settings.embedding_max_batch_tokens,
                max_batch_inputs=settings.embedding_max_batch_inputs,
                max_wait_seconds=settings.embedding_max_wait_ms / 1000,
                max_queue_inputs=settings.embedding_max_queue_inputs,
                stage_metrics=metrics.RERANK_BATCHES,
                what="rerank",
            )
        self._max_inputs = settings.max_inputs_per_request
        self._max_chars = settings.max_input_chars
        self._batcher: Batcher[TokenIds] = Batcher(
            encoder.encode_ids,
            encoder.dimension,
            max_batch_tokens=settings.embedding_max_batch_tokens,
            max_batch_inputs=settings.embedding_max_batch_inputs,
            max_wait_seconds=settings.embedding_max_wait_ms / 1000,
            max_queue_inputs=settings.embedding_max_queue_inputs,
            on_idle=IdleTrim(settings.embedding_malloc_trim_seconds),
        )
        self._tokenizer_thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="embedding-tokenizer"
        )

    async def close(self) -> None:
        """Finish the batches still queued, then stop the helper threads."""
        await self._batcher.close()
        if self._rerank_batcher is not None:
            await self._rerank_batcher.close()
        self._tokenizer_thread.shutdown(wait=False, cancel_futures=True)

    async def Embed(  # noqa: N802 - gRPC method name
        self, request: embedding_pb2.EmbedRequest | UndecodableRequest, context: EmbedContext
    ) -> embedding_pb2.EmbedResponse:
        metrics.REQUESTS.inc()
        received = time.perf_counter()
        if isinstance(request, UndecodableRequest):
            metrics.REJECTIONS.labels(reason="invalid").inc()
            raise _undecodable(
                request, "EmbedRequest", "an input is not valid UTF-8; inputs must be UTF-8 text"
            )
        inputs = list(request.inputs)
        try:
            self._validate(inputs, request.dimensions)
            ids = await self._tokenize(inputs, request.truncate)
        except InvalidArgument:
            metrics.REJECTIONS.labels(reason="invalid").inc()
            raise
        tokens = sum(len(row) for row in ids)
        with metrics.IN_PROGRESS.track_inprogress():
            vectors = shorten(await self._batcher.submit(ids), request.dimensions)
        metrics.INPUTS.inc(len(inputs))
        metrics.TOKENS.inc(tokens)
        log.debug(
            "embedded",
            extra={
                "inputs": len(inputs),
                "tokens": tokens,
                "dimension": int(vectors.shape[1]),
                "truncate": request.truncate,
                "total_seconds": round(time.perf_counter() - received, 4),
            },
        )
        return embedding_pb2.EmbedResponse(
            embeddings=[embedding_pb2.Embedding(values=row) for row in vectors.tolist()],
            model=self._encoder.name,
            dimension=int(vectors.shape[1]),
            usage=embedding_pb2.EmbedUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def Info(  # noqa: N802 - gRPC method name
        self, request: embedding_pb2.InfoRequest, context: InfoContext
    ) -> embedding_pb2.InfoResponse:
        return embedding_pb2.InfoResponse(
            model=self._encoder.name,
            dimension=self._encoder.dimension,
            max_input_tokens=self._encoder.max_input_tokens,
            max_inputs_per_request=self._max_inputs,
            backend=self._encoder.backend,
            rerank_model=self._reranker.name if self._reranker is not None else "",
        )

    async def Rerank(  # noqa: N802 - gRPC method name
        self, request: embedding_pb2.RerankRequest | UndecodableRequest, context: RerankContext
    ) -> embedding_pb2.RerankResponse:
        metrics.RERANK_REQUESTS.inc()
        received = time.perf_counter()
        if self._reranker is None or self._rerank_batcher is None:
            metrics.RERANK_REJECTIONS.labels(reason="no_model").inc()
            raise FailedPrecondition(
                "this embedding service has no rerank model; set AIMESH_RERANK_MODEL to a "
                "cross-encoder directory"
            )
        reranker = self._reranker
        try:
            if isinstance(request, UndecodableRequest):
                raise _undecodable(
                    request,
                    "RerankRequest",
                    "the query or a text is not valid UTF-8; they must be UTF-8 text",
                )
            texts = list(request.texts)
            self._validate_rerank(request.query, texts)
            pairs = await self._offload(
                sum(len(text) for text in texts) + len(request.query) * len(texts),
                reranker.tokenize,
                request.query,
                texts,
                request.truncate,
            )
        except InvalidArgument:
            metrics.RERANK_REJECTIONS.labels(reason="invalid").inc()
            raise
        tokens = sum(len(pair) for pair in pairs)
        scores = (await self._rerank_batcher.submit(pairs))[:, 0].tolist()
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        if request.top_n:
            order = order[: request.top_n]
        metrics.RERANK_PAIRS.inc(len(texts))
        elapsed = time.perf_counter() - received
        metrics.RERANK_SECONDS.observe(elapsed)
        log.debug(
            "reranked",
            extra={"texts": len(texts), "tokens": tokens, "total_seconds": round(elapsed, 4)},
        )
        return embedding_pb2.RerankResponse(
            results=[embedding_pb2.RerankResult(index=i, score=scores[i]) for i in order],
            model=reranker.name,
            usage=embedding_pb2.EmbedUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    def _validate_rerank(self, query: str, texts: Sequence[str]) -> None:
        if not query.strip():
            raise InvalidArgument("query must not be empty or whitespace")
        if len(query) > self._max_chars:
            raise InvalidArgument(
                f"query has {len(query)} characters; at most {self._max_chars} are accepted"
            )
        if not texts:
            raise InvalidArgument("texts must not be empty")
        if len(texts) > self._max_inputs:
            raise InvalidArgument(
                f"texts has {len(texts)} entries; at most {self._max_inputs} are accepted per call"
            )
        for index, text in enumerate(texts):
            if not text.strip():
                raise InvalidArgument(f"texts[{index}] is empty or whitespace")
            if len(text) > self._max_chars:
                raise InvalidArgument(
                    f"texts[{index}] has {len(text)} characters; at most {self._max_chars} "
                    "are accepted"
                )

    async def _offload(self, chars: int, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` inline for little text, else on the tokenizer thread."""
        if chars <= INLINE_TOKENIZE_CHARS:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(
            self._tokenizer_thread, function, *args
        )

    async def _tokenize(self, inputs: Sequence[str], truncate: bool) -> list[TokenIds]:
        return await self._offload(
            sum(len(text) for text in inputs), self._encoder.tokenize, inputs, truncate
        )

    def _validate(self, inputs: Sequence[str], dimensions: int) -> None:
        if not inputs:
            raise InvalidArgument("inputs must not be empty")
        if len(inputs) > self._max_inputs:
            raise InvalidArgument(
                f"inputs has {len(inputs)} entries; at most {self._max_inputs} are accepted per "
                f"call (inputs[{self._max_inputs}] and later are over the limit)"
            )
        if dimensions > self._encoder.dimension:
            raise InvalidArgument(
                f"dimensions is {dimensions}; the model {self._encoder.name} produces "
                f"{self._encoder.dimension}-dimensional vectors (0 keeps the full dimension)"
            )
        for index, text in enumerate(inputs):
            if not text:
                raise InvalidArgument(f"inputs[{index}] is empty")
            if text.isspace():
                raise InvalidArgument(f"inputs[{index}] contains only whitespace")
            if len(text) > self._max_chars:
                raise InvalidArgument(
                    f"inputs[{index}] has {len(text)} characters; at most {self._max_chars} "
                    "are accepted"
                )
