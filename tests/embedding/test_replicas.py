"""Two replicas behind one client channel: round_robin spreads the calls over both."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_common.channels import create_channel
from tests.conftest import free_port

pytestmark = pytest.mark.slow

SCRIPT = Path(sys.executable).parent / "aimesh-embedding"


async def embed_calls(client: httpx.AsyncClient, metrics_port: int) -> float:
    text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "aimesh_embedding_requests":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("aimesh_embedding_requests is not exported")


@pytest.fixture(scope="module")
async def replicas() -> AsyncIterator[list[tuple[int, int]]]:
    """Two aimesh-embedding processes; yields their (gRPC port, metrics port) pairs."""
    ports = [(free_port(), free_port()) for _ in range(2)]
    processes = [
        await asyncio.create_subprocess_exec(
            str(SCRIPT),
            env={
                **os.environ,
                "AIMESH_HOST": "127.0.0.1",
                "AIMESH_PORT": str(port),
                "AIMESH_METRICS_PORT": str(metrics),
                "AIMESH_LOG_LEVEL": "WARNING",
            },
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for port, metrics in ports
    ]
    try:
        for (port, _), process in zip(ports, processes, strict=True):
            channel = create_channel(f"127.0.0.1:{port}")
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 180
            while True:
                assert process.returncode is None, "a replica exited during start"
                assert time.monotonic() < deadline, "a replica did not start in time"
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.25)
            await channel.close()
        yield ports
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            await asyncio.wait_for(process.wait(), timeout=60)


async def test_one_channel_reaches_both_replicas(replicas: list[tuple[int, int]]) -> None:
    # What a headless Service's DNS name gives a client: several addresses for one target.
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port, _ in replicas)
    async with httpx.AsyncClient(timeout=5) as client:
        before = [await embed_calls(client, metrics) for _, metrics in replicas]
        channel = create_channel(target)
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        calls = 20
        try:
            for number in range(calls):
                reply = await stub.Embed(
                    embedding_pb2.EmbedRequest(inputs=[f"replica check {number}"]), timeout=30
                )
                assert reply.dimension == 384
        finally:
            await channel.close()
        served = [
            await embed_calls(client, metrics) - start
            for (_, metrics), start in zip(replicas, before, strict=True)
        ]
    assert sum(served) == calls
    assert min(served) >= calls // 4, f"calls per replica: {served}"
