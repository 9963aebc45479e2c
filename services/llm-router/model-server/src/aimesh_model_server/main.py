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
from aimesh_model_server.config import Settings
from aimesh_model_server.engine import (
    Engine,
    OpenVinoEngine,
    OrtGenaiEngine,
    TransformersEngine,
)
from aimesh_model_server.prepare import ModelSourceError, resolve

log = logging.getLogger("aimesh.model_server")


def _device(settings: Settings) -> str:
    if settings.engine == "openvino-genai":
        return "cpu"  # its CPU plugin is what is measured and shipped here
    if settings.device != "auto":
        return settings.device
    if settings.engine == "onnxruntime-genai":
        import onnxruntime_genai as og

        return "cuda" if og.is_cuda_available() else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_engine(settings: Settings) -> Engine:
    """The engine with its model loaded, converting the named model first if needed."""
    if settings.engine == "openvino-genai" and importlib.util.find_spec("openvino_genai") is None:
        # An extra, so that the image (onnxruntime-genai) does not carry OpenVINO.
        raise ModelSourceError(
            "AIMESH_ENGINE=openvino-genai needs OpenVINO: pip install "
            "'aimesh-model-server[openvino]' (make install does)"
        )
    device = _device(settings)
    model_dir = resolve(
        settings.model_path,
        settings.data_dir,
        engine=settings.engine,
        precision=settings.precision,
        device=device,
    )
    if settings.engine == "transformers":
        return TransformersEngine(
            model_dir, max_queue=settings.max_queue, device=device, threads=settings.threads
        )
    if settings.engine == "openvino-genai":
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
