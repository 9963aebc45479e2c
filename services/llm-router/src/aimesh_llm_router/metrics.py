"""Prometheus metrics of the LLM router (aimesh_llm_*), labelled by alias, provider and task.

Label values are bounded: aliases are validated before anything is recorded, and
``prompt_version`` is one of the versioned templates (``qa/v1``, ``summarize/v2``) of the
alias that answered, or ``none`` when no template was rendered (the extractive provider, or
a task that failed before any alias answered), so an A/B of two prompt versions shows on a
dashboard. Usage and
cost are also counted per tenant (``aimesh_llm_tenant_*``) for chargeback; tenant ids are
bounded by the gateway's tenants, and they are kept out of the per-task series.
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
    "LLM router tasks by model alias, provider, task, prompt template version and outcome "
    "(OK or a status code name).",
    ["alias", "provider", "task", "prompt_version", "outcome"],
)
LLM_TOKENS = Counter(
    "aimesh_llm_tokens_total",
    "Tokens used by LLM router tasks, by prompt template version; kind is prompt or completion.",
    ["alias", "provider", "task", "prompt_version", "kind"],
)
LLM_TENANT_TOKENS = Counter(
    "aimesh_llm_tenant_tokens_total",
    "Tokens used per tenant, alias (the one that answered) and provider; kind is prompt or "
    "completion.",
    ["alias", "provider", "tenant", "kind"],
)
LLM_TENANT_COST = Counter(
    "aimesh_llm_tenant_cost_usd_total",
    "Cost in US dollars from the configured prices, per tenant, alias and provider.",
    ["alias", "provider", "tenant"],
)
LLM_LATENCY = Histogram(
    "aimesh_llm_request_seconds",
    "Time to complete an LLM router task (for Generate: until the last delta).",
    ["alias", "provider", "task", "prompt_version"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)

CITATION_FALLBACKS = Counter(
    "aimesh_llm_citation_fallbacks_total",
    "Grounded answers whose citations did not validate (none, or a source never given) and "
    "that the extractive answer replaced, by the alias replaced and the one that answered.",
    ["from_alias", "to_alias", "task"],
)


@dataclass
class TaskRecord:
    """Collects the usage of one task while it runs, and which alias answered it."""

    alias: str
    provider: str
    task: str = ""
    tenant: str = ""
    usage: Usage | None = None
    cost_usd: float = 0.0
    prompt_version: str = ""

    def answered_by(self, alias: str, provider: str, prompt_version: str = "") -> None:
        self.alias = alias
        self.provider = provider
        self.prompt_version = prompt_version


@contextmanager
def observe(alias: str, provider: str, task: str, tenant: str = "") -> Iterator[TaskRecord]:
    """Count the task, its tokens, cost and latency, whatever the outcome.

    Series are labelled with the alias that answered (set by ``answered_by``; the
    requested alias when none did).
    """
    record = TaskRecord(alias=alias, provider=provider, task=task, tenant=tenant)
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
        alias, provider = record.alias, record.provider
        version = record.prompt_version or "none"
        LLM_LATENCY.labels(alias, provider, task, version).observe(time.perf_counter() - start)
        LLM_REQUESTS.labels(alias, provider, task, version, outcome).inc()
        if record.usage is not None:
            LLM_TOKENS.labels(alias, provider, task, version, "prompt").inc(
                record.usage.prompt_tokens
            )
            LLM_TOKENS.labels(alias, provider, task, version, "completion").inc(
                record.usage.completion_tokens
            )
            tenant = record.tenant or "-"
            LLM_TENANT_TOKENS.labels(alias, provider, tenant, "prompt").inc(
                record.usage.prompt_tokens
            )
            LLM_TENANT_TOKENS.labels(alias, provider, tenant, "completion").inc(
                record.usage.completion_tokens
            )
            LLM_TENANT_COST.labels(alias, provider, tenant).inc(record.cost_usd)
