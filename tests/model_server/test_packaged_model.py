"""The packaged SmolLM2-135M-Instruct, converted from its GGUF file and served for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aimesh_model_server.prepare import ModelSourceError, packaged_model
from tests.conftest import free_port

pytestmark = pytest.mark.slow


def _packaged() -> Path:
    try:
        return packaged_model()
    except ModelSourceError as error:
        pytest.skip(str(error))


def test_the_packaged_model_answers_through_the_openai_protocol(tmp_path: Path) -> None:
    _packaged()
    port = free_port()
    env = {
        **os.environ,
        "AIMESH_PORT": str(port),
        "AIMESH_DATA_DIR": str(tmp_path),
        "AIMESH_LOG_FORMAT": "text",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("AIMESH_MODEL_PATH", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "aimesh_model_server.main"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # first start converts the GGUF file
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the model server did not start"
            time.sleep(0.5)
        model = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
        assert model == "smollm2-135m-instruct"
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": model,
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 24,
            },
            timeout=60,
        ).json()
        assert "Paris" in reply["choices"][0]["message"]["content"]
        assert reply["usage"]["completion_tokens"] > 0
        converted = list((tmp_path / "models").iterdir())
        assert any(p.name.endswith("-int4-cpu") for p in converted), converted
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
