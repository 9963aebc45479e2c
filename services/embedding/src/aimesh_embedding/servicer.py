"""EmbeddingService: validates requests and runs the model off the event loop."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
from prometheus_client import Counter, Gauge, Histogram

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_common.errors import InvalidArgument
from aimesh_embedding.config import Settings
from aimesh_embedding.model import Embeddings, Encoder

log = logging.getLogger("aimesh.embedding")

REQUESTS = Counter("aimesh_embedding_requests", "Embed calls received.")
INPUTS = Counter("aimesh_embedding_inputs", "Inputs embedded.")
TOKENS = Counter("aimesh_embedding_tokens", "Model tokens embedded (after truncation).")
INFERENCE_SECONDS = Histogram(
    "aimesh_embedding_inference_seconds",
    "Time the model spent on one Embed call (excluding the wait for the model).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
IN_PROGRESS = Gauge(
    "aimesh_embedding_requests_in_progress",
    "Validated Embed calls waiting for or running on the model.",
)

EmbedContext = grpc.aio.ServicerContext[embedding_pb2.EmbedRequest, embedding_pb2.EmbedResponse]
InfoContext = grpc.aio.ServicerContext[embedding_pb2.InfoRequest, embedding_pb2.InfoResponse]


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    """Serves one encoder.

    The model runs on a dedicated single thread: inference is CPU-bound and would otherwise
    block the event loop, starving health checks and other calls while a batch computes.
    One thread also means the (not thread-safe) encoder never runs concurrently.
    """

    def __init__(self, encoder: Encoder, settings: Settings) -> None:
        self._encoder = encoder
        self._max_inputs = settings.max_inputs_per_request
        self._max_chars = settings.max_input_chars
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedding-model")

    def close(self) -> None:
        """Drop queued work; a batch already running finishes in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def Embed(  # noqa: N802 - gRPC method name
        self, request: embedding_pb2.EmbedRequest, context: EmbedContext
    ) -> embedding_pb2.EmbedResponse:
        REQUESTS.inc()
        inputs = list(request.inputs)
        self._validate(inputs)
        received = time.perf_counter()
        log.debug("embed started", extra={"inputs": len(inputs)})
        with IN_PROGRESS.track_inprogress():
            result, inference_seconds = await asyncio.get_running_loop().run_in_executor(
                self._executor,
                functools.partial(self._run, inputs, request.truncate, request.dimensions),
            )
        vectors = result.vectors
        INPUTS.inc(len(inputs))
        TOKENS.inc(result.tokens)
        INFERENCE_SECONDS.observe(inference_seconds)
        log.info(
            "embedded",
            extra={
                "inputs": len(inputs),
                "tokens": result.tokens,
                "dimension": int(vectors.shape[1]),
                "truncate": request.truncate,
                "inference_seconds": round(inference_seconds, 4),
                "total_seconds": round(time.perf_counter() - received, 4),
            },
        )
        return embedding_pb2.EmbedResponse(
            embeddings=[embedding_pb2.Embedding(values=row) for row in vectors.tolist()],
            model=self._encoder.name,
            dimension=int(vectors.shape[1]),
            usage=embedding_pb2.EmbedUsage(prompt_tokens=result.tokens, total_tokens=result.tokens),
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
        )

    def _validate(self, inputs: Sequence[str]) -> None:
        if not inputs:
            raise InvalidArgument("inputs must not be empty")
        if len(inputs) > self._max_inputs:
            raise InvalidArgument(
                f"inputs has {len(inputs)} entries; at most {self._max_inputs} are accepted per "
                f"call (inputs[{self._max_inputs}] and later are over the limit)"
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

    def _run(
        self, inputs: Sequence[str], truncate: bool, dimensions: int
    ) -> tuple[Embeddings, float]:
        """Runs on the model thread; returns the result and the time the model took."""
        start = time.perf_counter()
        result = self._encoder.embed(inputs, truncate=truncate, dimensions=dimensions)
        return result, time.perf_counter() - start
