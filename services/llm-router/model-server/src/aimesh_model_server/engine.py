"""The engines that generate tokens, behind one asynchronous interface.

``OrtGenaiEngine`` runs onnxruntime-genai's ``Engine``: one thread owns it and steps all
admitted requests together (a static batch of up to ``max_batch_size``; a request joins
as soon as a slot is free). ``TransformersEngine`` is the plain PyTorch reference the
benchmark compares against: one request at a time, a token loop with the KV cache.

Both hand tokens to the event loop as they are made (:meth:`Engine.submit` returns a
:class:`Generation`, an async iterator of token ids) and stop a request as soon as it is
cancelled, so a client that goes away frees its slot at the next step. Admission is bounded: at most
``max_batch_size`` requests generate and ``max_queue`` wait; one more raises
:class:`Overloaded` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aimesh_model_server import metrics

log = logging.getLogger("aimesh.model_server.engine")


class Overloaded(Exception):
    """Every batch slot and every queue place is taken."""


class EngineFailed(Exception):
    """The engine could not run a request."""


@dataclass(frozen=True)
class Sampling:
    """How one request's tokens are chosen."""

    max_tokens: int
    min_tokens: int = 0  # the end of the turn is not chosen before this many tokens
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class Finished:
    """The last item of a generation: why it ended."""

    reason: str  # "eos", "length" or "cancelled"


@dataclass(eq=False)
class _Job:
    prompt: list[int]
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[int | Finished | BaseException] = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    aborted: bool = False
    handle: Any = None  # the engine's request object
    turn: int = 0

    def emit(self, item: int | Finished | BaseException) -> None:
        # A request whose event loop has closed (the server stopped) has nobody to tell.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)


class Engine(ABC):
    """Tokens for a chat prompt; subclasses own a model and a tokenizer."""

    name: str

    def __init__(self, max_batch_size: int, max_queue: int) -> None:
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._waiting: deque[_Job] = deque()
        self._running: set[_Job] = set()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=f"{self.name}-engine", daemon=True)

    def start(self) -> None:
        """Start the engine thread; returns once it has opened the engine (or raises what
        opening it raised)."""
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._thread.start()
        self._opened.wait()
        if self._open_error is not None:
            raise self._open_error

    def _open(self) -> None:  # noqa: B027 - an optional hook
        """Create what must belong to the engine thread (engine thread, before any step)."""

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout=30)

    @abstractmethod
    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The prompt token ids of ``messages`` (role/content) with the assistant's turn
        opened by the model's chat template."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` without special tokens."""

    @property
    @abstractmethod
    def eos_ids(self) -> frozenset[int]: ...

    def submit(self, prompt: list[int], sampling: Sampling) -> Generation:
        """Queue a request; its tokens arrive through the returned :class:`Generation`.

        Raises :class:`Overloaded` at once when every slot and queue place is taken.
        """
        job = _Job(prompt, sampling, asyncio.get_running_loop())
        with self._wake:
            if len(self._running) + len(self._waiting) >= self.max_batch_size + self.max_queue:
                raise Overloaded(
                    f"the model server is busy ({len(self._running)} generating, "
                    f"{len(self._waiting)} waiting)"
                )
            self._waiting.append(job)
            metrics.WAITING.set(len(self._waiting))
            self._wake.notify_all()
        return Generation(self, job)

    def _cancel(self, job: _Job) -> None:
        with self._wake:
            job.cancelled = True
            if job in self._waiting:
                self._waiting.remove(job)
                metrics.WAITING.set(len(self._waiting))
            self._wake.notify_all()

    # The engine thread.
    def _serve(self) -> None:
        try:
            self._open()
        except BaseException as error:  # noqa: BLE001 - handed to start()
            self._open_error = error
            return
        finally:
            self._opened.set()
        while True:
            with self._wake:
                while not self._closed and not self._waiting and not self._running:
                    self._wake.wait()
                if self._closed:
                    break
                admitted: list[_Job] = []
                while self._waiting and len(self._running) < self.max_batch_size:
                    job = self._waiting.popleft()
                    self._running.add(job)
                    admitted.append(job)
                cancelled = [job for job in self._running if job.cancelled and not job.aborted]
                for job in cancelled:
                    job.aborted = True
                metrics.WAITING.set(len(self._waiting))
                metrics.RUNNING.set(len(self._running))
            for job in admitted:
                try:
                    self._begin(job)
                except Exception as error:  # noqa: BLE001 - reported to the request
                    log.warning("a request could not start", extra={"error": str(error)})
                    self._finish(job, EngineFailed(str(error)))
            for job in cancelled:
                self._abort(job)
            if self._running:
                try:
                    self._step()
                except Exception as error:
                    log.exception("engine step failed")
                    for job in list(self._running):
                        self._finish(job, EngineFailed(str(error)))
        for job in list(self._running) + list(self._waiting):
            job.emit(EngineFailed("the model server is shutting down"))

    def _finish(self, job: _Job, outcome: Finished | BaseException) -> None:
        with self._wake:
            self._running.discard(job)
            metrics.RUNNING.set(len(self._running))
            self._wake.notify_all()
        job.emit(outcome)

    @abstractmethod
    def _begin(self, job: _Job) -> None:
        """Start ``job`` (engine thread)."""

    @abstractmethod
    def _abort(self, job: _Job) -> None:
        """Stop a cancelled ``job`` and call :meth:`_finish` (engine thread)."""

    @abstractmethod
    def _step(self) -> None:
        """Advance the running jobs by one token each (engine thread)."""


class Generation:
    """The token ids of one request as they are made (async iterator).

    Ends when the model ends its turn or reaches ``max_tokens``; :attr:`finish_reason`
    then says which ("eos" or "length"). :meth:`cancel` (also called when the consumer
    leaves early) stops the request in the engine at its next step.
    """

    def __init__(self, engine: Engine, job: _Job) -> None:
        self._engine = engine
        self._job = job
        self.finish_reason: str | None = None
        self._done = False

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> int:
        if self._done:
            raise StopAsyncIteration
        item = await self._job.events.get()
        if isinstance(item, Finished):
            self._done = True
            self.finish_reason = item.reason
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def cancel(self) -> None:
        if not self._done:
            self._done = True
            self._engine._cancel(self._job)


class OrtGenaiEngine(Engine):
    """onnxruntime-genai's ``Engine`` (KV cache, batched steps, int4/int8 CPU kernels)."""

    name = "onnxruntime-genai"

    def __init__(
        self, model_dir: Path, *, max_batch_size: int, max_queue: int, threads: int = 0
    ) -> None:
        import onnxruntime_genai as og

        self._og = og
        config = og.Config(str(model_dir))
        if threads:
            config.overlay(
                json.dumps(
                    {"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}
                )
            )
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)
        self._eos = frozenset(int(t) for t in self.tokenizer.eos_token_ids)
        self._jobs: dict[int, _Job] = {}
        super().__init__(max_batch_size, max_queue)
        self.start()

    def _open(self) -> None:
        # onnxruntime-genai's Engine may only be used from the thread that created it.
        self._engine = self._og.Engine(self.model)
        capacity = self._engine.get_capabilities().configured_max_batch_size
        if capacity:
            self.max_batch_size = min(self.max_batch_size, capacity)
        self._buffer = self._engine.create_event_buffer(256)

    @property
    def eos_ids(self) -> frozenset[int]:
        return self._eos

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            json.dumps(list(messages)), add_generation_prompt=True
        )
        return [int(t) for t in self.tokenizer.encode(text)]

    def decode(self, ids: Sequence[int]) -> str:
        if not ids:
            return ""
        return str(self.tokenizer.decode(np.asarray(ids, dtype=np.int32)))

    def _begin(self, job: _Job) -> None:
        og = self._og
        request = self._engine.create_request()
        options = og.TurnOptions(request)
        options.set_max_generated_tokens(job.sampling.max_tokens)
        if job.sampling.min_tokens:
            options.set_min_generated_tokens(job.sampling.min_tokens)
        options.set_repetition_penalty(job.sampling.repetition_penalty)
        if job.sampling.no_repeat_ngram_size:
            options.set_no_repeat_ngram_size(job.sampling.no_repeat_ngram_size)
        if not job.sampling.greedy:
            options.set_do_sample(True)
            options.set_temperature(job.sampling.temperature)
            options.set_top_p(job.sampling.top_p)
        job.handle = request
        job.turn = request.begin_turn(np.asarray(job.prompt, dtype=np.int32), options)
        self._jobs[id(request)] = job

    def _abort(self, job: _Job) -> None:
        if job.handle is not None:
            job.handle.cancel_turn(job.turn)
        # The engine reports the cancelled turn as finished at its next step.

    def _release(self, job: _Job) -> None:
        self._jobs.pop(id(job.handle), None)
        with contextlib.suppress(Exception):
            job.handle.close()

    def _step(self) -> None:
        flags = self._og.EngineEventFlags
        token_flag, done_flag = int(flags.TOKEN.value), int(flags.TURN_FINISHED.value)
        failed_flag = int(flags.FAILED.value)
        if not self._engine.has_pending_requests():
            for job in list(self._running):
                self._release(job)
                self._finish(job, Finished("cancelled" if job.cancelled else "eos"))
            return
        for event in self._engine.run(self._buffer):
            owner = self._jobs.get(id(event.request))
            if owner is None:
                continue
            job = owner
            kind = int(event.flags.value)
            if kind & token_flag and not job.cancelled and int(event.token) not in self._eos:
                job.emit(int(event.token))
            if kind & failed_flag:
                self._release(job)
                self._finish(job, EngineFailed(f"generation failed ({event.error_code.name})"))
            elif kind & done_flag:
                reason = event.finish_reason.name
                self._release(job)
                self._finish(
                    job,
                    Finished(
                        "length"
                        if reason in ("MAX_GENERATED_TOKENS", "MAX_SESSION_TOKENS")
                        else "cancelled"
                        if reason == "CANCELLED"
                        else "eos"
                    ),
                )


class NgramGuard:
    """Whether a reply says an n-gram of ``size`` tokens a second time, fed one token at a
    time: constant work per token (a set of the n-grams said so far), where rescanning the
    reply at every step cost time in proportion to its length."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._window: deque[int] = deque(maxlen=max(size, 1))
        self._seen: set[tuple[int, ...]] = set()

    def add(self, token: int) -> bool:
        """Take the reply's next token; True when the n-gram it ends was said before."""
        if self.size <= 0:
            return False
        self._window.append(token)
        if len(self._window) < self.size:
            return False
        gram = tuple(self._window)
        if gram in self._seen:
            return True
        self._seen.add(gram)
        return False


def repeats_ngram(tokens: Sequence[int], size: int) -> bool:
    """Some n-gram of ``size`` tokens occurs twice in ``tokens`` (what :class:`NgramGuard`
    finds, all at once)."""
    guard = NgramGuard(size)
    return any(guard.add(token) for token in tokens)


class OpenVinoEngine(Engine):
    """openvino-genai's ``ContinuousBatchingPipeline`` (paged KV cache, continuous batching:
    a new request's prompt is prefilled in chunks between the other requests' decode steps,
    so one long prompt does not stall the streams already running).

    Its sampler applies ``no_repeat_ngram_size`` to beam search only, so for greedy and
    sampled replies the n-gram guard is replaced here by :class:`NgramGuard`: a reply is
    ended (finish reason "stop") at the first n-gram it says a second time, counting only
    tokens that are not blank (an indented line repeated with more indentation is still a
    repeat). Where the other engines steer away from the repeat, this one says it once more
    and stops.
    """

    name = "openvino-genai"

    def __init__(
        self,
        model_dir: Path,
        *,
        max_batch_size: int,
        max_queue: int,
        threads: int = 0,
        kv_cache_gb: float = 1.0,
        prefill_chunk: int = 256,
    ) -> None:
        import openvino as ov
        import openvino_genai as og

        self._og, self._ov = og, ov
        self._model_dir = model_dir
        self._threads = threads
        self._kv_cache_gb = kv_cache_gb
        self._prefill_chunk = prefill_chunk
        self.tokenizer = og.Tokenizer(str(model_dir))
        eos = {int(self.tokenizer.get_eos_token_id())}
        self._eos = frozenset(i for i in eos if i >= 0)
        self._next_id = 0
        self._guards: dict[int, NgramGuard] = {}  # each running job's non-blank n-grams
        self._blank: dict[int, bool] = {}  # token id -> its text is only white space
        super().__init__(max_batch_size, max_queue)
        self.start()

    def _open(self) -> None:
        og = self._og
        scheduler = og.SchedulerConfig()
        scheduler.cache_size = max(1, round(self._kv_cache_gb))
        scheduler.max_num_seqs = self.max_batch_size
        # Prompt tokens per step (with the running streams' decode tokens): bounds how long
        # one step holds the other streams back while a new prompt is read.
        scheduler.max_num_batched_tokens = self._prefill_chunk
        scheduler.dynamic_split_fuse = True
        scheduler.enable_prefix_caching = False
        properties: dict[str, Any] = {}
        if self._threads:
            properties["INFERENCE_NUM_THREADS"] = self._threads
        self._pipe = og.ContinuousBatchingPipeline(
            str(self._model_dir), scheduler, "CPU", properties
        )

    @property
    def eos_ids(self) -> frozenset[int]:
        return self._eos

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)
        encoded = self.tokenizer.encode(text, add_special_tokens=False)
        return [int(t) for t in encoded.input_ids.data[0]]

    def decode(self, ids: Sequence[int]) -> str:
        if not ids:
            return ""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def _is_blank(self, token: int) -> bool:
        blank = self._blank.get(token)
        if blank is None:
            blank = self._blank[token] = not self.decode([token]).strip()
        return blank

    def _begin(self, job: _Job) -> None:
        og = self._og
        sampling = job.sampling
        config = og.GenerationConfig()
        config.max_new_tokens = sampling.max_tokens
        config.min_new_tokens = sampling.min_tokens
        config.repetition_penalty = sampling.repetition_penalty
        config.no_repeat_ngram_size = sampling.no_repeat_ngram_size
        config.eos_token_id = min(self._eos) if self._eos else -1
        config.stop_token_ids = set(self._eos)
        if not sampling.greedy:
            config.do_sample = True
            config.temperature = sampling.temperature
            config.top_p = sampling.top_p
            if sampling.seed is not None:
                config.rng_seed = sampling.seed
        self._next_id += 1
        ids = self._ov.Tensor(np.asarray([job.prompt], dtype=np.int64))
        job.handle = self._pipe.add_request(self._next_id, ids, config)
        self._guards[id(job)] = NgramGuard(sampling.no_repeat_ngram_size)

    def _abort(self, job: _Job) -> None:
        if job.handle is not None:
            job.handle.cancel()
        # The pipeline frees the request's KV blocks at its next step, then reports it.

    def _step(self) -> None:
        status = self._og.GenerationStatus
        if self._pipe.has_non_finished_requests():
            self._pipe.step()
        for job in list(self._running):
            handle = job.handle
            guard = self._guards.get(id(job))  # made in _begin, not at every step
            if guard is None:
                guard = self._guards[id(job)] = NgramGuard(job.sampling.no_repeat_ngram_size)
            repeated = False
            while handle.can_read() and not repeated:
                for output in handle.read().values():
                    for token in output.generated_ids:
                        if int(token) in self._eos:
                            continue
                        job.turn += 1
                        if not self._is_blank(int(token)) and guard.add(int(token)):
                            # The first n-gram said twice: it is said, then the reply ends.
                            repeated = job.turn >= job.sampling.min_tokens
                        if not job.cancelled:
                            job.emit(int(token))
                        if repeated:
                            break
                    if repeated:
                        break
            state = handle.get_status()
            if state == status.RUNNING and not repeated:
                continue
            self._guards.pop(id(job), None)
            if repeated and state == status.RUNNING:
                handle.stop()  # ends as finished: the reply so far stands
                self._finish(job, Finished("eos"))
            elif state == status.FINISHED:
                full = job.turn >= job.sampling.max_tokens
                self._finish(job, Finished("length" if full else "eos"))
            elif state in (status.CANCEL, status.STOP):
                self._finish(job, Finished("cancelled"))
            else:  # IGNORED: the KV cache had no room for this request
                self._finish(job, EngineFailed("the request did not fit the KV cache"))


class TransformersEngine(Engine):
    """Plain PyTorch generation, one request at a time: the reference the benchmark uses."""

    name = "transformers"

    def __init__(
        self, model_dir: Path, *, max_queue: int, device: str = "cpu", threads: int = 0
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
        model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model: Any = model.to(device).eval()
        self._device = device
        eos = self.model.generation_config.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        self._eos = frozenset(int(i) for i in ids if i is not None)
        if threads:
            torch.set_num_threads(threads)
        super().__init__(1, max_queue)
        self.start()

    @property
    def eos_ids(self) -> frozenset[int]:
        return self._eos

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        encoded: Any = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True
        )
        if not isinstance(encoded, list):  # a BatchEncoding in transformers 5
            encoded = encoded["input_ids"]
        return [int(t) for t in encoded]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def _begin(self, job: _Job) -> None:
        job.handle = {"cache": None, "ids": list(job.prompt), "made": 0}

    def _abort(self, job: _Job) -> None:
        self._finish(job, Finished("cancelled"))

    def _step(self) -> None:
        from transformers import (
            LogitsProcessorList,
            NoRepeatNGramLogitsProcessor,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopPLogitsWarper,
        )

        torch = self._torch
        for job in list(self._running):
            state = job.handle
            sampling = job.sampling
            processors = LogitsProcessorList()
            if sampling.repetition_penalty != 1.0:
                processors.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
            if sampling.no_repeat_ngram_size:
                processors.append(NoRepeatNGramLogitsProcessor(sampling.no_repeat_ngram_size))
            if not sampling.greedy:
                processors.append(TemperatureLogitsWarper(sampling.temperature))
                processors.append(TopPLogitsWarper(sampling.top_p))
            with torch.inference_mode():
                if state["cache"] is None:
                    inputs = torch.tensor([state["ids"]], device=self._device)
                else:
                    inputs = torch.tensor([state["ids"][-1:]], device=self._device)
                past = {} if state["cache"] is None else state["cache"]
                # Logits of the last position only: a prompt's other positions' logits
                # (vocabulary x prompt length) are a fifth of SmolLM2's prefill, never read.
                output = self.model(input_ids=inputs, use_cache=True, logits_to_keep=1, **past)
                # transformers 5 names the KV cache ``cache``; earlier ones past_key_values.
                cache = getattr(output, "cache", None)
                state["cache"] = (
                    {"cache": cache}
                    if cache is not None
                    else {"past_key_values": output.past_key_values}
                )
                scores = processors(
                    torch.tensor([state["ids"]], device=self._device), output.logits[:, -1, :]
                )
                if state["made"] < sampling.min_tokens:
                    scores[:, list(self._eos)] = -float("inf")
                if sampling.greedy:
                    token = int(scores.argmax(dim=-1)[0])
                else:
                    token = int(torch.multinomial(torch.softmax(scores, dim=-1), 1)[0, 0])
            state["ids"].append(token)
            state["made"] += 1
            if token in self._eos:
                self._finish(job, Finished("eos"))
                continue
            job.emit(token)
            if state["made"] >= sampling.max_tokens:
                self._finish(job, Finished("length"))
