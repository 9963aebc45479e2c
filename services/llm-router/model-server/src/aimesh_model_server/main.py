"""Entry point of the ``aimesh-model-server`` console script: settings, model, server."""

from __future__ import annotations

import importlib.util
import logging
import sys

import uvicorn
from fastapi import FastAPI

from aimesh_common.logging import configure_logging
from aimesh_common.settings import load_settings
from aimesh_model_server.api import create_app
from aimesh_model_server.config import Engine as EngineName
from aimesh_model_server.config import Settings
from aimesh_model_server.engine import (
    Engine,
    OpenVinoEngine,
    OrtGenaiEngine,
    TransformersEngine,
)
from aimesh_model_server.prepare import ModelSourceError, openvino_reads, resolve

log = logging.getLogger("aimesh.model_server")


def _ort_sees_cuda() -> bool:
    """onnxruntime-genai is installed (the ``onnxruntime`` extra) as its CUDA build and a
    GPU answers."""
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return False
    import onnxruntime_genai as og

    return bool(og.is_cuda_available())


def chosen_engine(settings: Settings) -> EngineName:
    """The engine ``AIMESH_ENGINE`` names; for ``auto``, onnxruntime-genai where a GPU is
    asked for or its CUDA build sees one, or where the model is one openvino-genai does not
    read (an onnxruntime-genai directory, a transformers directory of another architecture
    than Llama); else openvino-genai (the CPU default: its first token and concurrency
    measured best, docs/llm-router.md)."""
    if settings.engine != "auto":
        return settings.engine
    if settings.device == "cuda" or (settings.device == "auto" and _ort_sees_cuda()):
        return "onnxruntime-genai"
    source = settings.model_path
    if source is not None and source.exists() and not openvino_reads(source):
        return "onnxruntime-genai"
    return "openvino-genai"


def _device(settings: Settings, engine: EngineName) -> str:
    if engine == "openvino-genai":
        return "cpu"  # its CPU plugin is what is measured and shipped here
    if settings.device != "auto":
        return settings.device
    if engine == "onnxruntime-genai":
        return "cuda" if _ort_sees_cuda() else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_LIBRARIES: dict[str, tuple[str, str]] = {
    # engine -> (module, the extra that installs it; make install does). openvino-genai is a
    # dependency; transformers comes with the ``convert`` extra.
    "onnxruntime-genai": ("onnxruntime_genai", "onnxruntime"),
    "transformers": ("transformers", "convert"),
}


def build_engine(settings: Settings) -> Engine:
    """The engine with its model loaded, converting the named model first if needed."""
    engine = chosen_engine(settings)
    if engine in _LIBRARIES and importlib.util.find_spec(_LIBRARIES[engine][0]) is None:
        raise ModelSourceError(
            f"AIMESH_ENGINE={engine} needs its library: pip install "
            f"'aimesh-model-server[{_LIBRARIES[engine][1]}]' (make install does)"
        )
    device = _device(settings, engine)
    model_dir = resolve(
        settings.model_path,
        settings.data_dir,
        engine=engine,
        precision=settings.precision,
        device=device,
    )
    if engine == "transformers":
        return TransformersEngine(
            model_dir, max_queue=settings.max_queue, device=device, threads=settings.threads
        )
    if engine == "openvino-genai":
        return OpenVinoEngine(
            model_dir,
            max_batch_size=settings.max_batch_size,
            max_queue=settings.max_queue,
            threads=settings.threads,
        )
    return OrtGenaiEngine(
        model_dir,
        max_batch_size=settings.max_batch_size,
        max_queue=settings.max_queue,
        threads=settings.threads,
    )


def create_server_app(settings: Settings, engine: Engine) -> FastAPI:
    app = create_app(engine, model_name=settings.served_name(), settings=settings)
    app.router.on_shutdown.append(engine.close)
    return app


def main() -> None:
    settings = load_settings(Settings)
    configure_logging("model-server", settings.log_level, settings.log_format)
    try:
        engine = build_engine(settings)
    except ModelSourceError as error:
        print(f"cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    log.info(
        "model server starting",
        extra={"model": settings.served_name(), "engine": engine.name, "port": settings.port},
    )
    uvicorn.run(
        create_server_app(settings, engine),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=int(settings.grace_seconds),
    )


if __name__ == "__main__":
    main()
