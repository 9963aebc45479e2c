"""The gRPC backends: one channel per service, created once per app and closed at shutdown."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from aimesh.embedding.v1 import embedding_pb2_grpc
from aimesh.llm.v1 import llm_pb2_grpc
from aimesh.retrieval.v1 import retrieval_pb2_grpc
from aimesh_common.channels import check_health, create_channel
from aimesh_gateway.core.config import Settings
from aimesh_gateway.observability.metrics import UpstreamErrors

if TYPE_CHECKING:
    from aimesh.embedding.v1.embedding_pb2_grpc import EmbeddingServiceAsyncStub
    from aimesh.llm.v1.llm_pb2_grpc import LLMRouterServiceAsyncStub
    from aimesh.retrieval.v1.retrieval_pb2_grpc import RetrievalServiceAsyncStub


@dataclass
class Backends:
    """Stubs of the services the gateway calls, plus every channel for health checks."""

    llm_router: LLMRouterServiceAsyncStub
    retrieval: RetrievalServiceAsyncStub
    embedding: EmbeddingServiceAsyncStub
    channels: dict[str, grpc.aio.Channel]

    @classmethod
    def connect(cls, settings: Settings, errors: UpstreamErrors | None = None) -> Backends:
        """Create the channels (lazily connecting: nothing is dialled until the first call).

        With ``errors``, every backend call that ends in an error status is counted. Each
        call sends the request id itself (``Upstream.metadata``), so the channels go without
        create_channel's request-id interceptors (grpc.aio runs every intercepted unary
        call in a task of its own).
        """
        channels = {
            name: create_channel(
                addr,
                interceptors=[errors.interceptor()] if errors is not None else None,
                request_id_propagation=False,
            )
            for name, addr in (
                ("llm-router", settings.llm_router_service_addr),
                ("retrieval", settings.retrieval_service_addr),
                ("embedding", settings.embedding_service_addr),
            )
        }
        stub_channels = (
            {name: errors.channel(channel) for name, channel in channels.items()}
            if errors is not None
            else channels
        )
        return cls(
            llm_router=llm_pb2_grpc.LLMRouterServiceStub(stub_channels["llm-router"]),
            retrieval=retrieval_pb2_grpc.RetrievalServiceStub(stub_channels["retrieval"]),
            embedding=embedding_pb2_grpc.EmbeddingServiceStub(stub_channels["embedding"]),
            channels=channels,
        )

    async def health(self, deadline_seconds: float) -> dict[str, bool]:
        """Whether each backend answers grpc.health.v1 with SERVING, checked concurrently."""
        names = list(self.channels)
        results = await asyncio.gather(
            *(check_health(self.channels[n], deadline_seconds=deadline_seconds) for n in names)
        )
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))
