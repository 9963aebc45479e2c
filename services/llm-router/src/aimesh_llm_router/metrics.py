"""Prometheus metrics of the LLM router (aimesh_llm_*), labelled by alias, provider and task.

Label values are bounded: aliases are validated before anything is recorded, and
tenant ids are deliberately not labels (they go to the logs instead).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from aimesh_common.errors import AimeshError
from aimesh_llm_router.tokens import Usage

LLM_REQUESTS = Counter(
    "aimesh_llm_requests_total",
    "LLM router tasks by model alias, provider, task and outcome (OK or a status code name).",
    ["alias", "provider", "task", "outcome"],
)
LLM_TOKENS = Counter(
    "aimesh_llm_tokens_total",
    "Tokens used by LLM router tasks; kind is prompt or completion.",
    ["alias", "provider", "task", "kind"],
)
LLM_LATENCY = Histogram(
    "aimesh_llm_request_seconds",
    "Time to complete an LLM router task (for Generate: until the last delta).",
    ["alias", "provider", "task"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)


@dataclass
class TaskRecord:
    """Collects the usage of one task while it runs."""

    usage: Usage | None = None


@contextmanager
def observe(alias: str, provider: str, task: str) -> Iterator[TaskRecord]:
    """Count the task, its tokens and its latency, whatever the outcome."""
    record = TaskRecord()
    start = time.perf_counter()
    outcome = "OK"
    try:
        yield record
    except AimeshError as error:
        outcome = error.code.name
        raise
    except (GeneratorExit, asyncio.CancelledError):
        outcome = "CANCELLED"
        raise
    except BaseException:
        outcome = "INTERNAL"
        raise
    finally:
        LLM_LATENCY.labels(alias, provider, task).observe(time.perf_counter() - start)
        LLM_REQUESTS.labels(alias, provider, task, outcome).inc()
        if record.usage is not None:
            LLM_TOKENS.labels(alias, provider, task, "prompt").inc(record.usage.prompt_tokens)
            LLM_TOKENS.labels(alias, provider, task, "completion").inc(
                record.usage.completion_tokens
            )
