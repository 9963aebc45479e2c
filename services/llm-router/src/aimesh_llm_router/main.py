"""Entry point of the ``aimesh-llm-router`` console script."""

from __future__ import annotations

import asyncio
import logging
import sys

from aimesh_common.errors import Unavailable
from aimesh_common.logging import configure_logging
from aimesh_common.metrics import start_metrics_server
from aimesh_common.settings import load_settings
from aimesh_common.tracing import tracer_provider_for
from aimesh_llm_router.config import Settings
from aimesh_llm_router.server import build_dependencies, create_server
from aimesh_llm_router.templates import PromptTemplateError

log = logging.getLogger("aimesh.llm_router")


async def run(settings: Settings) -> None:
    tracer_provider = tracer_provider_for(settings.otlp_endpoint, "aimesh-llm-router")
    deps = build_dependencies(settings, tracer_provider=tracer_provider)
    server = create_server(settings, deps)
    if tracer_provider is not None:
        server.on_stop.append(tracer_provider.shutdown)
    metrics_port = start_metrics_server(settings.metrics_port)
    log.info(
        "llm router starting",
        extra={
            "models": {model.alias: model.config.provider for model in deps.models.aliases},
            "metrics_port": metrics_port,
        },
    )
    await server.serve(settings.grace_seconds)


def main() -> None:
    settings = load_settings(Settings)
    configure_logging("llm-router", settings.log_level, settings.log_format)
    # The OpenAI SDK logs request details at DEBUG; keep it quiet whatever the level.
    for noisy in ("openai", "httpx2", "langchain_openai"):
        logging.getLogger(noisy).setLevel(
            max(logging.INFO, logging.getLevelName(settings.log_level))
        )
    try:
        asyncio.run(run(settings))
    except (PromptTemplateError, ValueError) as error:
        print(f"cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except Unavailable as error:
        # The conversation store could not be opened or migrated (the message names only
        # the kind of failure: the URL may hold a password).
        log.error("cannot start", extra={"error": error.message})
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
