"""The server around the servicer: health, reflection, concurrency, startup and shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_embedding.server import SERVICE_NAME
from tests.conftest import free_port
from tests.embedding.texts import words

if TYPE_CHECKING:
    from aimesh.embedding.v1.embedding_pb2_grpc import EmbeddingServiceAsyncStub as Stub

SCRIPT = Path(sys.executable).parent / "aimesh-embedding"
IN_PROGRESS = "aimesh_embedding_requests_in_progress"
RECEIVED = "aimesh_embedding_requests"


def big_request(count: int = 32) -> embedding_pb2.EmbedRequest:
    """``count`` full-length inputs: several seconds of work on two CPU cores."""
    texts = [words(300, start=i) for i in range(count)]
    return embedding_pb2.EmbedRequest(inputs=texts, truncate=True)


async def call_embed(
    stub: Stub, request: embedding_pb2.EmbedRequest
) -> embedding_pb2.EmbedResponse:
    return await stub.Embed(request, timeout=180)


async def test_health_is_serving(embedding_channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(embedding_channel)
    for service in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(embedding_channel: grpc.aio.Channel) -> None:
    assert SERVICE_NAME == "aimesh.embedding.v1.EmbeddingService"
    reflection = reflection_pb2_grpc.ServerReflectionStub(embedding_channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in reflection.ServerReflectionInfo(iter([request]), timeout=5):
        names = {service.name for service in reply.list_services_response.service}
        break
    assert SERVICE_NAME in names
    assert "grpc.health.v1.Health" in names


async def test_health_is_answered_while_a_batch_computes(
    embedding_channel: grpc.aio.Channel, embedding_stub: Stub
) -> None:
    health = health_pb2_grpc.HealthStub(embedding_channel)
    request = big_request()
    embed = asyncio.create_task(call_embed(embedding_stub, request))
    deadline = time.monotonic() + 30
    while not REGISTRY.get_sample_value(IN_PROGRESS):
        assert time.monotonic() < deadline, "the Embed call never started"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # well into the model's work

    for _ in range(3):
        started = time.perf_counter()
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert time.perf_counter() - started < 2.0
    info = await embedding_stub.Info(embedding_pb2.InfoRequest(), timeout=5)
    assert info.dimension == 384
    assert not embed.done(), "the batch finished too early to show anything"

    response = await embed
    assert len(response.embeddings) == len(request.inputs)
    assert response.usage.prompt_tokens == 256 * len(request.inputs)


def run_main(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT)],
        env={**os.environ, "AIMESH_METRICS_PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AIMESH_PORT": "abc"}, ["AIMESH_PORT:", "'abc'"]),
        (
            {"AIMESH_EMBEDDING_MODEL": "/nonexistent"},
            ["AIMESH_EMBEDDING_MODEL:", "model directory '/nonexistent' does not exist"],
        ),
        ({"AIMESH_MAX_INPUTS_PER_REQUEST": "0"}, ["AIMESH_MAX_INPUTS_PER_REQUEST:"]),
    ],
    ids=["port", "model", "max-inputs"],
)
def test_main_rejects_bad_settings(env: dict[str, str], expected: list[str]) -> None:
    result = run_main(env)
    assert result.returncode == 2
    assert "invalid settings:" in result.stderr
    for text in expected:
        assert text in result.stderr
    assert "Traceback" not in result.stderr


def test_main_reports_an_unloadable_model(tmp_path: Path) -> None:
    model_dir = tmp_path / "broken-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "no-such-architecture"}')
    result = run_main({"AIMESH_EMBEDDING_MODEL": str(model_dir), "AIMESH_LOG_FORMAT": "text"})
    assert result.returncode == 1
    assert f"cannot start: cannot load the embedding model from {model_dir}" in result.stderr
    assert "Traceback" not in result.stderr


async def _drain(stream: asyncio.StreamReader, lines: list[str]) -> None:
    """Keep reading the child's log so it never blocks on a full pipe."""
    async for line in stream:
        lines.append(line.decode(errors="replace"))


async def _wait_serving(channel: grpc.aio.Channel, process: asyncio.subprocess.Process) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.returncode is None, "aimesh-embedding exited during start"
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.25)
            continue
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
    pytest.fail("aimesh-embedding did not become SERVING in time")


async def _metric(client: httpx.AsyncClient, url: str, name: str) -> float:
    text = (await client.get(url)).text
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return float(family.samples[0].value)
    raise AssertionError(f"{name} is not exported")


@pytest.mark.slow
async def test_sigterm_lets_the_in_flight_call_finish() -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "AIMESH_HOST": "127.0.0.1",
        "AIMESH_PORT": str(port),
        "AIMESH_METRICS_PORT": str(metrics_port),
        "AIMESH_GRACE_SECONDS": "120",
    }
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    lines: list[str] = []
    drain = asyncio.create_task(_drain(process.stderr, lines))
    try:
        async with (
            grpc.aio.insecure_channel(
                f"127.0.0.1:{port}",
                # Retry the connection quickly while the child is still loading the model.
                options=[
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 500),
                ],
            ) as channel,
            httpx.AsyncClient(timeout=5) as client,
        ):
            await _wait_serving(channel, process)
            stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
            # Several callers in flight, sharing batches, when the signal comes.
            requests = [big_request(12), big_request(8), big_request(1)]
            embeds = [asyncio.create_task(call_embed(stub, request)) for request in requests]
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            # Signal once the server has received every call and the big ones are still being
            # answered. (Waiting for all three in the in-progress gauge at one instant raced on a
            # loaded machine.)
            deadline = time.monotonic() + 60
            while await _metric(client, metrics_url, RECEIVED) < len(requests):
                assert time.monotonic() < deadline, "the Embed calls never reached the server"
                failed = [e.exception() for e in embeds if e.done() and e.exception()]
                assert not failed, failed
                await asyncio.sleep(0.05)
            assert await _metric(client, metrics_url, IN_PROGRESS) >= 1
            # The one-input call may already be answered on a quiet machine (it rides the first
            # batch); the big ones take seconds and are what the signal must not cut off.
            assert not all(embed.done() for embed in embeds)

            process.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*embeds)
            for request, response in zip(requests, responses, strict=True):
                assert len(response.embeddings) == len(request.inputs)
                assert response.dimension == 384
            assert await asyncio.wait_for(process.wait(), timeout=60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await drain
    log = "".join(lines)
    assert '"msg": "malloc mmap threshold fixed"' in log
    assert '"msg": "stopping"' in log
    assert '"msg": "stopped"' in log
    assert "Traceback" not in log
