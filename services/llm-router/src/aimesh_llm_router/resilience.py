"""Calling upstream models resiliently: deadlines, retries, circuit breakers, fallbacks.

Every task runs through :class:`Resilience` with the alias's fallback chain:

- the call has one deadline (the alias's ``deadline_seconds``, or the gRPC deadline if
  sooner) and each attempt its own timeout (``timeout_seconds``);
- transient failures (UNAVAILABLE: 5xx, connection errors, malformed replies;
  RESOURCE_EXHAUSTED: 429; DEADLINE_EXCEEDED of one attempt) are retried with exponential
  backoff and full jitter, waiting what the upstream's ``Retry-After`` asks instead when it
  says so;
- a circuit per upstream opens after consecutive failures, so a dead upstream is skipped
  at once for ``cooldown_seconds``, then one trial call decides whether it closes again;
- when an alias is exhausted, the next alias of the chain is tried; a stream falls back
  only while it has produced nothing, since the client may already have shown the text;
- errors the client caused (INVALID_ARGUMENT, NOT_FOUND: bad request, context too long)
  are raised at once: neither retried nor sent to a fallback.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

from prometheus_client import Counter, Gauge

from aimesh_common.errors import (
    AimeshError,
    DeadlineExceeded,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
)
from aimesh_llm_router.modelconfig import BreakerSpec, ModelsConfig, RetrySpec
from aimesh_llm_router.upstream import retry_after

if TYPE_CHECKING:
    from aimesh_llm_router.models import ResolvedModel

log = logging.getLogger("aimesh.llm_router.resilience")

T = TypeVar("T")

ATTEMPTS = Counter(
    "aimesh_llm_upstream_attempts_total",
    "Upstream model calls by alias and outcome (OK or a status code name).",
    ["alias", "outcome"],
)
FALLBACKS = Counter(
    "aimesh_llm_fallbacks_total",
    "Calls passed on from one alias to the next of its fallback chain.",
    ["from_alias", "to_alias"],
)
CIRCUIT_OPEN = Gauge(
    "aimesh_llm_circuit_open",
    "1 while the circuit of an alias's upstream is open (calls skipped), else 0.",
    ["alias"],
)

# Transient: worth another attempt at the same upstream.
RETRYABLE: tuple[type[AimeshError], ...] = (Unavailable, ResourceExhausted, DeadlineExceeded)
# Not the client's fault but this upstream's (rejected key, unknown model): try the next alias.
FALLBACK_ONLY: tuple[type[AimeshError], ...] = (FailedPrecondition,)

State = Literal["closed", "open", "half_open"]


class CircuitOpen(Unavailable):
    """The upstream's circuit is open: it failed repeatedly and is cooling down."""


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a single half-open trial."""

    def __init__(self, spec: BreakerSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = spec.failure_threshold
        self._cooldown = spec.cooldown_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False
        self.state: State = "closed"

    def allow(self) -> bool:
        """Whether a call may go to the upstream now."""
        if self.state == "closed":
            return True
        if self.state == "open" and self._clock() - self._opened_at >= self._cooldown:
            self.state = "half_open"
            self._trial_running = False
        if self.state == "half_open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._trial_running = False
        self.state = "closed"

    def failure(self) -> None:
        self._failures += 1
        self._trial_running = False
        if self.state == "half_open" or self._failures >= self._threshold:
            self.state = "open"
            self._opened_at = self._clock()


class Resilience:
    """Runs calls over an alias chain with retries, breakers and one deadline."""

    def __init__(
        self,
        config: ModelsConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._retry: RetrySpec = config.retry
        self._breaker_spec = config.circuit_breaker
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, model: ResolvedModel) -> CircuitBreaker:
        key = model.config.upstream_key
        if key not in self._breakers:
            self._breakers[key] = CircuitBreaker(self._breaker_spec, self._clock)
        return self._breakers[key]

    def deadline(self, model: ResolvedModel, time_remaining: float | None) -> float:
        """Absolute (clock) deadline of a call on ``model``, capped by the caller's."""
        budget = model.config.deadline_seconds
        if time_remaining is not None:
            budget = min(budget, time_remaining)
        return self._clock() + budget

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt))."""
        ceiling = min(self._retry.max_delay_seconds, self._retry.base_delay_seconds * 2**attempt)
        return float(self._jitter() * ceiling)

    def _attempt_timeout(self, model: ResolvedModel, deadline: float) -> float:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise DeadlineExceeded("no model answered within the deadline of the call")
        return min(model.config.timeout_seconds, remaining)

    def _record(self, model: ResolvedModel, error: AimeshError | None) -> None:
        breaker = self.breaker(model)
        ATTEMPTS.labels(model.alias, "OK" if error is None else error.code.name).inc()
        if error is None:
            breaker.success()
        else:
            breaker.failure()
        CIRCUIT_OPEN.labels(model.alias).set(1 if breaker.state == "open" else 0)

    async def _after_failure(
        self, model: ResolvedModel, error: AimeshError, attempt: int, deadline: float
    ) -> bool:
        """Record ``error``; wait and return True when the same alias should be retried.

        Raises ``error`` itself when the client caused it.
        """
        if not isinstance(error, RETRYABLE + FALLBACK_ONLY):
            raise error
        self._record(model, error)
        log.warning(
            "model call failed",
            extra={"model": model.alias, "attempt": attempt + 1, "status": error.code.name},
        )
        if not isinstance(error, RETRYABLE) or attempt >= model.config.max_retries:
            return False
        asked = retry_after(error)
        if asked is not None and asked > self._retry.max_retry_after_seconds:
            return False
        wait = asked if asked is not None else self.backoff(attempt)
        if self._clock() + wait >= deadline:
            return False
        await self._sleep(wait)
        return True

    def _exhausted(self, chain: Sequence[ResolvedModel], last: AimeshError | None) -> AimeshError:
        if last is not None:
            return last
        return CircuitOpen(
            f"model {chain[0].alias!r} and its fallbacks are cooling down after repeated "
            "failures; retry later"
        )

    def _note_fallback(self, chain: Sequence[ResolvedModel], index: int) -> None:
        if index + 1 < len(chain):
            FALLBACKS.labels(chain[index].alias, chain[index + 1].alias).inc()
            log.warning(
                "falling back to the next model",
                extra={"model": chain[index].alias, "fallback": chain[index + 1].alias},
            )

    async def complete(
        self,
        chain: Sequence[ResolvedModel],
        call: Callable[[ResolvedModel], Awaitable[T]],
        deadline: float,
    ) -> tuple[ResolvedModel, T]:
        """The first successful ``call`` along ``chain``, and the model that answered."""
        last: AimeshError | None = None
        for index, model in enumerate(chain):
            attempt = 0
            while self.breaker(model).allow():
                timeout = self._attempt_timeout(model, deadline)
                try:
                    async with asyncio.timeout(timeout):
                        result = await call(model)
                except TimeoutError:
                    error: AimeshError = DeadlineExceeded(
                        f"model {model.alias!r} did not answer within {timeout:.3g} s"
                    )
                except AimeshError as failure:
                    error = failure
                else:
                    self._record(model, None)
                    return model, result
                last = error
                if not await self._after_failure(model, error, attempt, deadline):
                    break
                attempt += 1
            self._note_fallback(chain, index)
        raise self._exhausted(chain, last)

    async def stream(
        self,
        chain: Sequence[ResolvedModel],
        start: Callable[[ResolvedModel], AsyncIterator[T]],
        deadline: float,
    ) -> AsyncIterator[tuple[ResolvedModel, T]]:
        """Items of the first stream along ``chain`` that produces one.

        Until the first item a failure is retried or falls back like :meth:`complete`;
        after it, failures reach the caller (each item has the attempt timeout).
        """
        last: AimeshError | None = None
        for index, model in enumerate(chain):
            attempt = 0
            while self.breaker(model).allow():
                timeout = self._attempt_timeout(model, deadline)
                items = start(model)
                try:
                    async with asyncio.timeout(timeout):
                        first = await anext(items)
                except StopAsyncIteration:
                    self._record(model, None)
                    return
                except TimeoutError:
                    await _close(items)
                    error: AimeshError = DeadlineExceeded(
                        f"model {model.alias!r} did not start answering within {timeout:.3g} s"
                    )
                except AimeshError as failure:
                    await _close(items)
                    error = failure
                else:
                    async for item in self._rest(model, first, items):
                        yield item
                    return
                last = error
                if not await self._after_failure(model, error, attempt, deadline):
                    break
                attempt += 1
            self._note_fallback(chain, index)
        raise self._exhausted(chain, last)

    async def _rest(
        self, model: ResolvedModel, first: T, items: AsyncIterator[T]
    ) -> AsyncIterator[tuple[ResolvedModel, T]]:
        """The started stream: each next item within the attempt timeout."""
        try:
            yield model, first
            while True:
                try:
                    async with asyncio.timeout(model.config.timeout_seconds):
                        item = await anext(items)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise DeadlineExceeded(
                        f"model {model.alias!r} stopped sending within "
                        f"{model.config.timeout_seconds:.3g} s"
                    ) from None
                yield model, item
        except AimeshError as error:
            if isinstance(error, RETRYABLE + FALLBACK_ONLY):
                self._record(model, error)
            raise
        else:
            self._record(model, None)
        finally:
            await _close(items)


async def _close(items: AsyncIterator[object]) -> None:
    close = getattr(items, "aclose", None)
    if close is not None:
        await close()
