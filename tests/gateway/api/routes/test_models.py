"""GET /v1/models (OpenAI list shape)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from aimesh_gateway.core.embedding_info import (
    FIRST_LISTING_WAIT_SECONDS,
    INFO_TTL_SECONDS,
    REFRESH_DEADLINE_SECONDS,
    RETRY_SECONDS,
)
from aimesh_gateway.main import create_app
from aimesh_gateway.state import state_of
from tests.gateway.conftest import FakeMesh
from tests.gateway.helpers import running, settings_for, user


async def test_models_in_openai_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models", headers=user())
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "data": [
            {
                "id": "default",
                "object": "model",
                "created": 0,
                "owned_by": "aimesh",
                "description": "Echo model for tests",
                "context_window": 4096,
                "default_for": ["chat", "summarize", "qa"],
            },
            {
                "id": "fast",
                "object": "model",
                "created": 0,
                "owned_by": "aimesh",
                "description": "Shorter replies",
                "context_window": 2048,
                "default_for": [],
            },
        ],
    }


async def test_a_failing_embedding_service_is_asked_again_only_after_a_pause(
    fake_mesh: FakeMesh,
) -> None:
    """The fake mesh's embedding server has no Info (UNIMPLEMENTED): the chat models are
    listed without it, and the failing call is not repeated on every request."""
    app = create_app(fake_mesh.settings())

    def failed_info_calls() -> float:
        value = state_of(app).metrics.registry.get_sample_value(
            "aimesh_upstream_errors_total",
            {"service": "aimesh.embedding.v1.EmbeddingService", "code": "UNIMPLEMENTED"},
        )
        return value or 0.0

    async def listed() -> list[str]:
        response = await client.get("/v1/models", headers=user())
        assert response.status_code == 200
        await asyncio.sleep(0.05)  # the error counter is updated by a watcher task
        return [model["id"] for model in response.json()["data"]]

    async with running(app) as client:
        for _ in range(3):
            assert await listed() == ["default", "fast"]
        assert failed_info_calls() == 1
        info = state_of(app).embedding_info
        assert info.failed_at is not None
        info.failed_at -= RETRY_SECONDS
        assert await listed() == ["default", "fast"]
        assert failed_info_calls() == 2


# A separate process serving the embedding service's Info, so it can be stopped with SIGSTOP:
# its socket still accepts connections, but nothing answers (a hung service, not a dead one).
INFO_SERVER = """
import asyncio
from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_common.server import build_grpc_server


class Embedding(embedding_pb2_grpc.EmbeddingServiceServicer):
    async def Info(self, request, context):
        return embedding_pb2.InfoResponse(
            model="tiny-embedder", dimension=8, max_input_tokens=16, backend="test"
        )


async def main():
    server = build_grpc_server(
        host="127.0.0.1",
        port=0,
        register=lambda s: embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(
            Embedding(), s
        ),
        service_names=["aimesh.embedding.v1.EmbeddingService"],
    )
    await server.start()
    print(server.port, flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
"""


@contextlib.contextmanager
def info_server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", INFO_SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        assert port.isdigit(), "the Info server did not start"
        yield process, f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(10)


async def _timed_listing(client: httpx.AsyncClient) -> tuple[float, list[str]]:
    started = time.monotonic()
    response = await client.get("/v1/models", headers=user())
    assert response.status_code == 200, response.text
    return time.monotonic() - started, [model["id"] for model in response.json()["data"]]


async def test_a_hung_embedding_service_does_not_hold_up_the_list(fake_mesh: FakeMesh) -> None:
    """GET /v1/models needs only the router; the embedding model's Info is cached and
    refreshed in the background with a short deadline (issue 21 item 3)."""
    with info_server() as (process, address):
        app = create_app(
            settings_for(
                router_addr=fake_mesh.router_addr,
                retrieval_addr=fake_mesh.retrieval_addr,
                embedding_addr=address,
            )
        )
        async with running(app) as client:
            # Healthy: the model is listed (fetched in the background from the start).
            _, ids = await _timed_listing(client)
            assert ids == ["default", "fast", "tiny-embedder"]
            process.send_signal(signal.SIGSTOP)
            # Its Info grows old: every listing starts or finds a refresh that hangs, and
            # none waits for it; the cached Info is still listed.
            cache = state_of(app).embedding_info
            assert cache.fetched is not None
            cache.fetched = (cache.fetched[0] - INFO_TTL_SECONDS, cache.fetched[1])
            for _ in range(3):
                took, ids = await _timed_listing(client)
                assert took < 1.0
                assert ids == ["default", "fast", "tiny-embedder"]
            await asyncio.sleep(REFRESH_DEADLINE_SECONDS + 0.5)
            assert cache.backing_off(), "the hung refresh ends at its deadline"

        # Hung from the start: the first listings wait at most half a second, then none.
        app = create_app(
            settings_for(
                router_addr=fake_mesh.router_addr,
                retrieval_addr=fake_mesh.retrieval_addr,
                embedding_addr=address,
            )
        )
        async with running(app) as client:
            took, ids = await _timed_listing(client)
            assert took < FIRST_LISTING_WAIT_SECONDS + 0.5
            assert ids == ["default", "fast"]
            took, ids = await _timed_listing(client)
            assert took < 0.3
            assert ids == ["default", "fast"]
            # Once it answers again, the model comes back after the retry pause.
            process.send_signal(signal.SIGCONT)
            await asyncio.sleep(REFRESH_DEADLINE_SECONDS + 0.2)
            state_of(app).embedding_info.failed_at = None
            await _timed_listing(client)
            await asyncio.sleep(0.5)
            _, ids = await _timed_listing(client)
            assert ids == ["default", "fast", "tiny-embedder"]
