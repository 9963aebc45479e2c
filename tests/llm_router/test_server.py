"""Wiring: provider selection from settings, and the console script as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest

from aimesh.llm.v1 import llm_pb2, llm_pb2_grpc
from aimesh_common.channels import check_health
from aimesh_llm_router.config import Settings
from aimesh_llm_router.server import build_dependencies
from tests.conftest import free_port

BIN = Path(sys.executable).parent


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "AIMESH_OPENAI_API_KEY", "AIMESH_OPENAI_API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AIMESH_LLM_PROVIDER", raising=False)


async def test_auto_selects_openai_when_a_key_is_set(
    no_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-selection-test")
    deps = build_dependencies(Settings(port=0, metrics_port=None))
    try:
        model = deps.models.resolve("")
        assert model.alias == "default"
        assert model.provider.name == "openai"
        assert deps.models.resolve("fast").provider.name == "openai"
        assert deps.embedding is None
    finally:
        await deps.aclose()


async def test_auto_selects_local_without_a_key(no_key: None) -> None:
    deps = build_dependencies(Settings(port=0, metrics_port=None))
    try:
        assert deps.models.resolve("default").provider.name == "local"
        assert deps.embedding is not None
    finally:
        await deps.aclose()


async def test_console_script_serves_and_stops_on_sigterm(no_key: None) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AIMESH_PORT": str(port),
        "AIMESH_HOST": "127.0.0.1",
        "AIMESH_METRICS_PORT": str(free_port()),
        "AIMESH_LLM_PROVIDER": "local",
        "AIMESH_LOG_FORMAT": "json",
        "AIMESH_GRACE_SECONDS": "1",
    }
    process = await asyncio.create_subprocess_exec(
        str(BIN / "aimesh-llm-router"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for _ in range(300):  # a busy 2-core machine can take 10+ s to import
                if await check_health(channel, deadline_seconds=0.5):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the router did not become healthy")
            stub = llm_pb2_grpc.LLMRouterServiceStub(channel)
            models = await stub.ListModels(llm_pb2.ListModelsRequest())
            assert [model.id for model in models.models] == ["default", "fast"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0
    assert b'"models": {"default": "local", "fast": "local"}' in stderr


async def test_console_script_rejects_bad_settings(no_key: None) -> None:
    env = {**os.environ, "AIMESH_LLM_PROVIDER": "openai", "AIMESH_PORT": str(free_port())}
    process = await asyncio.create_subprocess_exec(
        str(BIN / "aimesh-llm-router"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 2
    assert b"AIMESH_LLM_PROVIDER" in stderr
    assert b"Traceback" not in stderr


async def test_console_script_lists_every_model_file_problem(no_key: None, tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n"
        "  default: {provider: nosuch, fallbacks: [ghost]}\n"
        "  fast: {provider: openai, model: m, api_key_env: AIMESH_TEST_UNSET_KEY}\n",
        encoding="utf-8",
    )
    env = {**os.environ, "AIMESH_MODELS_FILE": str(models), "AIMESH_PORT": str(free_port())}
    env.pop("AIMESH_TEST_UNSET_KEY", None)
    process = await asyncio.create_subprocess_exec(
        str(BIN / "aimesh-llm-router"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 2
    text = stderr.decode()
    assert "Traceback" not in text
    assert "models.default.provider: unknown provider 'nosuch'" in text
    assert "models.default.fallbacks[0]: unknown alias 'ghost'" in text
    assert "models.fast.api_key_env: environment variable AIMESH_TEST_UNSET_KEY" in text
