"""A client interceptor recording the inputs of every Embed call made on its channel: the
tests count how often a text reaches the embedding service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

EMBED = "/aimesh.embedding.v1.EmbeddingService/Embed"


class EmbedCalls(grpc.aio.UnaryUnaryClientInterceptor):
    """``calls``: the inputs of each Embed call, in the order they were sent."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = client_call_details.method
        if (method.decode() if isinstance(method, bytes) else method) == EMBED:
            self.calls.append(list(request.inputs))
        return await continuation(client_call_details, request)

    def containing(self, text: str) -> list[list[str]]:
        """The calls that embedded ``text``."""
        return [inputs for inputs in self.calls if text in inputs]


def recorded_channel(addr: str) -> tuple[grpc.aio.Channel, EmbedCalls]:
    """A channel to ``addr`` whose Embed calls are recorded."""
    calls = EmbedCalls()
    return grpc.aio.insecure_channel(addr, interceptors=[calls]), calls
