"""Rerankers: score the fused candidates of a search against the query, best first.

``AIMESH_RERANKER`` picks one:

* ``none``: no reranker (a search that asks for one is FAILED_PRECONDITION);
* ``embedding``: the Rerank RPC of the embedding service (its cross-encoder);
* ``http``: a rerank HTTP API, as TEI, Jina, Cohere and vLLM serve it, in one of two
  dialects (``AIMESH_RERANK_PROTOCOL``):

  - ``tei``: ``POST {url}/rerank`` with ``{"query", "texts", "truncate"}``, answered by
    ``[{"index", "score"}]``;
  - ``cohere`` (Cohere, Jina, vLLM): ``POST {url}/v1/rerank`` with ``{"model", "query",
    "documents", "top_n"}``, answered by ``{"results": [{"index", "relevance_score"}]}``.

The API key (``AIMESH_RERANK_API_KEY`` or a file named by ``AIMESH_RERANK_API_KEY_FILE``)
goes in an ``Authorization: Bearer`` header and nowhere else: never into a log line or an
error message.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import httpx

from aimesh_common.embedding_client import EmbeddingClient
from aimesh_common.errors import FailedPrecondition, Unavailable
from aimesh_retrieval import metrics
from aimesh_retrieval.config import Settings
from aimesh_retrieval.store import Hit

log = logging.getLogger("aimesh.retrieval.rerank")


class Reranker(Protocol):
    """Scores texts against a query."""

    @property
    def name(self) -> str: ...

    async def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        """One relevance score per text, in text order; higher is more relevant."""
        ...

    async def close(self) -> None: ...


class EmbeddingReranker:
    """The embedding service's cross-encoder (its Rerank RPC)."""

    name = "embedding"

    def __init__(self, client: EmbeddingClient) -> None:
        self._client = client

    async def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        return await self._client.rerank(query, texts)

    async def close(self) -> None:
        """The embedding client belongs to the caller."""


class HttpReranker:
    """A rerank HTTP API (``tei`` or ``cohere`` dialect) over one pooled httpx client."""

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        protocol: str,
        model: str = "",
        api_key: str | None = None,
        timeout: float = 30.0,
        batch_size: int = 32,
    ) -> None:
        if protocol not in ("tei", "cohere"):
            raise ValueError(f"unknown rerank protocol {protocol!r}")
        self._protocol = protocol
        self._model = model
        self._batch_size = max(1, batch_size)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    async def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        # A server caps the texts of one call (TEI's --max-client-batch-size is 32 by
        # default); scores are per pair, so bigger lists go in several calls.
        scores: list[float] = []
        for start in range(0, len(texts), self._batch_size):
            scores.extend(await self._call(query, texts[start : start + self._batch_size]))
        return scores

    async def _call(self, query: str, texts: Sequence[str]) -> list[float]:
        if self._protocol == "tei":
            path = "/rerank"
            body: dict[str, Any] = {"query": query, "texts": list(texts), "truncate": True}
        else:
            path = "/v1/rerank"
            body = {"query": query, "documents": list(texts), "top_n": len(texts)}
            if self._model:
                body["model"] = self._model
        try:
            response = await self._post(path, body)
        except httpx.TimeoutException:
            raise Unavailable("the rerank service did not answer in time") from None
        except httpx.HTTPError as error:
            raise Unavailable(
                f"the rerank service is unreachable ({type(error).__name__})"
            ) from None
        if response.status_code in (401, 403):
            raise FailedPrecondition(
                f"the rerank service refused the credentials (HTTP {response.status_code}); "
                "check AIMESH_RERANK_API_KEY"
            )
        if response.status_code != 200:
            # Status only: the body may quote the query or the texts.
            log.warning("rerank service failed", extra={"status": response.status_code})
            raise Unavailable(f"the rerank service answered HTTP {response.status_code}")
        try:
            return self._parse(response.json(), len(texts))
        except (ValueError, TypeError, KeyError) as error:
            raise Unavailable(f"the rerank service sent an unexpected answer: {error}") from None

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """One POST; a pooled connection the server closed while idle (its keep-alive ran
        out as the request went) fails with a read or protocol error before any answer, so
        the call, which only scores, goes once more on a fresh connection."""
        try:
            return await self._client.post(path, json=body)
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
            return await self._client.post(path, json=body)

    def _parse(self, payload: Any, count: int) -> list[float]:
        if self._protocol == "tei":
            rows, key = payload, "score"
        else:
            rows, key = payload["results"], "relevance_score"
        if not isinstance(rows, list):
            raise ValueError("the results are not a list")
        scores = [math.nan] * count
        for row in rows:
            index = int(row["index"])
            if not 0 <= index < count:
                raise ValueError(f"index {index} is out of range for {count} texts")
            scores[index] = float(row[key])
        if any(math.isnan(score) for score in scores):
            raise ValueError(f"{len(rows)} scores for {count} texts")
        return scores

    async def close(self) -> None:
        await self._client.aclose()


async def rerank_hits(reranker: Reranker, query: str, hits: Sequence[Hit], top_k: int) -> list[Hit]:
    """The ``top_k`` best of ``hits`` by ``reranker``, each scored by it; ties keep the order
    of ``hits`` (the fused order)."""
    if not hits:
        return []
    scores = await reranker.scores(query, [hit.text for hit in hits])
    metrics.RERANKED.labels(reranker.name).inc(len(hits))
    order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))[:top_k]
    return [replace(hits[i], score=scores[i]) for i in order]


def build_reranker(settings: Settings, embedder: EmbeddingClient) -> Reranker | None:
    """The reranker ``settings`` configure; None for ``none``."""
    if settings.reranker == "embedding":
        return EmbeddingReranker(embedder)
    if settings.reranker == "http":
        key = settings.rerank_api_key
        return HttpReranker(
            settings.rerank_url,
            protocol=settings.rerank_protocol,
            model=settings.rerank_model,
            api_key=key.get_secret_value() if key is not None else None,
            timeout=settings.rerank_timeout_seconds,
            batch_size=settings.rerank_http_batch_size,
        )
    return None
