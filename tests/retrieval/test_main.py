"""The aimesh-retrieval process: settings from the environment, serving, metrics, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request
from pathlib import Path

import pytest

from aimesh.retrieval.v1 import retrieval_pb2 as pb
from aimesh.retrieval.v1 import retrieval_pb2_grpc
from aimesh_common.channels import check_health, create_channel
from tests.conftest import free_port


def _environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMESH_")}
    env.pop("EMBEDDING_SERVICE_ADDR", None)
    env.update(values)
    return env


async def _start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aimesh_retrieval.main",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_invalid_settings_exit_2() -> None:
    process = await _start(_environment(AIMESH_CHUNK_SIZE="lots"))
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert "AIMESH_CHUNK_SIZE" in stderr.decode()
    assert "Traceback" not in stderr.decode()


async def test_unreachable_milvus_server_exits_1() -> None:
    process = await _start(
        _environment(
            AIMESH_MILVUS_URI=f"http://127.0.0.1:{free_port()}",
            AIMESH_MILVUS_TOKEN="do-not-log-me",
            AIMESH_MILVUS_TIMEOUT_SECONDS="3",
            AIMESH_METRICS_PORT="0",
            AIMESH_PORT="0",
        )
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 1
    text = stderr.decode()
    assert "cannot connect to Milvus" in text
    assert "do-not-log-me" not in text


async def test_serves_until_sigterm(tmp_path: Path, embedding_addr: str) -> None:
    port, metrics_port = free_port(), free_port()
    process = await _start(
        _environment(
            AIMESH_PORT=str(port),
            AIMESH_HOST="127.0.0.1",
            AIMESH_METRICS_PORT=str(metrics_port),
            AIMESH_DATA_DIR=str(tmp_path),
            EMBEDDING_SERVICE_ADDR=embedding_addr,
            AIMESH_GRACE_SECONDS="2",
        )
    )
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        for _ in range(240):
            if await check_health(channel, deadline_seconds=0.5):
                break
            assert process.returncode is None, "the service exited early"
            await asyncio.sleep(0.25)
        else:
            pytest.fail("the service did not report SERVING in time")
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        await stub.UpsertDocuments(
            pb.UpsertDocumentsRequest(
                tenant_id="t",
                collection="docs",
                documents=[pb.Document(id="d", text="Bees make honey from nectar.")],
            )
        )
        reply = await stub.Search(pb.SearchRequest(tenant_id="t", collection="docs", query="honey"))
        assert [chunk.document_id for chunk in reply.chunks] == ["d"]
        assert (tmp_path / "milvus.db").exists()

        def scrape() -> str:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())

        metrics = await asyncio.to_thread(scrape)
        assert 'aimesh_retrieval_documents_upserted_total{outcome="created"} 1.0' in metrics
        assert "aimesh_retrieval_search_seconds_count" in metrics
    finally:
        await channel.close()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert '"msg": "stopped"' in stderr.decode()
    # glibc's threshold fixed before Milvus Lite started (issue 28: its memory levels off).
    assert '"msg": "malloc mmap threshold fixed"' in stderr.decode()
    assert '"mmap_threshold_kib": 128' in stderr.decode()
    # One BLAS thread (issue 28: OpenBLAS's spinning threads cost 2-7x the CPU per search).
    assert '"msg": "BLAS threads fixed"' in stderr.decode()
    assert '"threads": 1' in stderr.decode()
    # Arrow on the system allocator from its first import (issue 28: mimalloc held 50-90 MiB
    # more and stepped at Milvus Lite's flushes and merges).
    assert '"msg": "Arrow memory pool"' in stderr.decode()
    assert '"arrow_memory_pool": "system"' in stderr.decode()


async def test_arrow_memory_pool_is_the_setting_from_the_first_import(tmp_path: Path) -> None:
    """Arrow reads its allocator once, when pymilvus first loads it: the service's setting
    has reached it by then (no late switch, which would leave earlier blocks on the old
    pool)."""
    script = (
        "import aimesh_retrieval.main, pyarrow, os;"
        "print(pyarrow.default_memory_pool().backend_name, os.environ['ARROW_DEFAULT_MEMORY_POOL'])"
    )
    for setting, expected in ((None, "system"), ("mimalloc", "mimalloc")):
        env = _environment()
        env.pop("ARROW_DEFAULT_MEMORY_POOL", None)
        if setting:
            env["AIMESH_ARROW_MEMORY_POOL"] = setting
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, env=env, stdout=asyncio.subprocess.PIPE
        )
        stdout, _ = await asyncio.wait_for(process.communicate(), 60)
        assert stdout.decode().split() == [expected, expected]


def test_a_late_arrow_pool_is_switched_and_said(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Importing the entry point sets ARROW_DEFAULT_MEMORY_POOL: restored after the test.
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    import pyarrow

    from aimesh_retrieval.main import use_arrow_pool

    before = pyarrow.default_memory_pool()
    other = "mimalloc" if before.backend_name != "mimalloc" else "system"
    try:
        with caplog.at_level("INFO", logger="aimesh.retrieval"):
            use_arrow_pool(other)
        assert pyarrow.default_memory_pool().backend_name == other
        assert "set after Arrow loaded" in caplog.text
        caplog.clear()
        with caplog.at_level("INFO", logger="aimesh.retrieval"):
            use_arrow_pool(other)
        assert "Arrow memory pool" in caplog.text
        assert "set after" not in caplog.text
    finally:
        pyarrow.set_memory_pool(before)


def test_an_allocator_arrow_was_built_without_is_a_start_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    import pyarrow

    from aimesh_retrieval.main import use_arrow_pool

    def missing() -> None:
        raise pyarrow.ArrowNotImplementedError("built without jemalloc")

    monkeypatch.setattr(pyarrow, "jemalloc_memory_pool", missing)
    before = pyarrow.default_memory_pool().backend_name
    with pytest.raises(SystemExit) as stopped:
        use_arrow_pool("jemalloc")
    assert stopped.value.code == 2
    assert "no such memory pool" in caplog.text
    assert pyarrow.default_memory_pool().backend_name == before


async def test_unreachable_job_database_exits_1(tmp_path: Path) -> None:
    process = await _start(
        _environment(
            AIMESH_DATA_DIR=str(tmp_path / "not-yet-created"),
            AIMESH_JOBS_DATABASE_URL=f"postgresql+asyncpg://u:s3cret@127.0.0.1:{free_port()}/x",
            AIMESH_METRICS_PORT="0",
            AIMESH_PORT="0",
        )
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 1
    text = stderr.decode()
    assert "cannot open the ingestion job store" in text
    assert "s3cret" not in text
    assert "Traceback" not in text
