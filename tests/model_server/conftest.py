"""A tiny model converted once per session, and real model servers on free ports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from aimesh_model_server.config import Settings
from aimesh_model_server.engine import (
    Engine,
    OpenVinoEngine,
    OrtGenaiEngine,
    TransformersEngine,
)
from aimesh_model_server.main import create_server_app
from aimesh_model_server.prepare import resolve
from tests.conftest import free_port
from tests.model_server.tiny import build_tiny_llama

MODEL = "tiny"


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "hf")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def tiny_engine_dir(tiny_hf_dir: Path, tiny_data_dir: Path) -> Path:
    """The tiny model built into onnxruntime-genai's format (int4, like the default)."""
    return resolve(
        tiny_hf_dir, tiny_data_dir, engine="onnxruntime-genai", precision="int4", device="cpu"
    )


@pytest.fixture(scope="session")
def tiny_openvino_dir(tiny_hf_dir: Path, tiny_data_dir: Path) -> Path:
    """The tiny model written as GGUF and read into OpenVINO IR by openvino-genai."""
    return resolve(
        tiny_hf_dir, tiny_data_dir, engine="openvino-genai", precision="int8", device="cpu"
    )


@dataclass
class RunningServer:
    url: str
    engine: Engine
    settings: Settings

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(base_url=self.url, **kwargs)


async def until(condition: Callable[[], object], seconds: float = 10.0) -> None:
    """Wait until ``condition()`` holds; fail after ``seconds``."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not hold in time")


ServerFactory = Callable[..., contextlib.AbstractAsyncContextManager[RunningServer]]


@pytest.fixture(scope="session")
def model_server(
    tiny_engine_dir: Path, tiny_hf_dir: Path, tiny_openvino_dir: Path
) -> ServerFactory:
    """``async with model_server(engine="onnxruntime-genai", **settings) as server``: a real
    uvicorn server in this process serving the tiny model."""

    @contextlib.asynccontextmanager
    async def start(
        engine: str = "onnxruntime-genai", **overrides: Any
    ) -> AsyncIterator[RunningServer]:
        port = free_port()
        values: dict[str, Any] = {"model_name": MODEL, "port": port, "engine": engine}
        values.update(overrides)
        settings = Settings(**values)
        built: Engine
        if engine == "transformers":
            built = TransformersEngine(tiny_hf_dir, max_queue=settings.max_queue)
        elif engine == "openvino-genai":
            built = OpenVinoEngine(
                tiny_openvino_dir,
                max_batch_size=settings.max_batch_size,
                max_queue=settings.max_queue,
            )
        else:
            built = OrtGenaiEngine(
                tiny_engine_dir,
                max_batch_size=settings.max_batch_size,
                max_queue=settings.max_queue,
            )
        app = create_server_app(settings, built)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        task = asyncio.create_task(server.serve())
        await until(lambda: server.started)
        try:
            yield RunningServer(f"http://127.0.0.1:{port}", built, settings)
        finally:
            server.should_exit = True
            await task

    return start
