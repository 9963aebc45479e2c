"""``make bench-llm``: the model server's engines side by side on the packaged model.

For each engine (openvino-genai on the packaged GGUF model, onnxruntime-genai at each
precision asked for, and plain ``transformers`` fp32 as the reference, all in the same run on
the same prompts):

* time to first token of one grounded prompt of about 600 tokens (three numbered sources
  from Python's own documentation and a question, as the QA template lays them out);
* decode tokens/s of that one stream after its first token;
* with 1, 2, 4 and 8 concurrent requests of different prompts: the slowest first token and
  the aggregate tokens/s (prefill included), as a client load sees them;
* aggregate decode with 2, 4 and 8 streams: as many short questions at once, each made to
  say 128 tokens, and the tokens all of them said while every one of them was decoding (from
  the last first token to the first last token) per second of that window, against one
  stream's decode (issue 27's target: 4 streams >= 1.5x one);
* greedy agreement with the reference on a fixed prompt set: the share of replies whose
  first 32 tokens are identical, and the mean share of the common prefix.

The engines run in this process through the model server's own engine classes (the same
code the HTTP server runs). The model is converted once into ``.aimesh/models``.
Writes its table into docs/benchmarks.md. Nothing else heavy should run meanwhile; the load
average is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from pydoc_data.topics import topics
from typing import cast

from aimesh_model_server.config import Precision
from aimesh_model_server.engine import (
    Engine,
    OpenVinoEngine,
    OrtGenaiEngine,
    Sampling,
    TransformersEngine,
)
from aimesh_model_server.prepare import resolve
from scripts.bench.doc import write_section

DECODE_TOKENS = 64
STREAM_TOKENS = 128  # each stream of the aggregate-decode cells
AGREEMENT_TOKENS = 32
CONCURRENCY = (1, 2, 4, 8)
STREAMS = (1, 2, 4, 8)
QUESTIONS = (
    "What does the with statement guarantee?",
    "When is the else clause of a loop executed?",
    "What happens when a name is not found in any scope?",
    "How are default argument values evaluated?",
    "What does the global statement do?",
    "Which objects are considered false?",
    "What does yield do in a function?",
    "How does an except clause match an exception?",
)


def _sources(offset: int, words: int = 175) -> list[str]:
    keys = sorted(topics)
    chosen = []
    for key in keys[offset * 3 : offset * 3 + 3]:
        text = " ".join(topics[key].split())
        chosen.append(" ".join(text.split()[:words]))
    return chosen


def grounded_messages(index: int) -> list[dict[str, str]]:
    """A QA prompt of about 600 tokens: three numbered sources and a question."""
    sources = "\n\n".join(f"[{n}] {text}" for n, text in enumerate(_sources(index + 5), 1))
    return [
        {
            "role": "system",
            "content": "Answer the question using only the numbered sources. Cite the "
            "sources you use as [n]. If they do not contain the answer, say so.",
        },
        {
            "role": "user",
            "content": f"Sources:\n{sources}\n\nQuestion: {QUESTIONS[index % len(QUESTIONS)]}",
        },
    ]


@dataclass
class Timed:
    tokens: list[int]
    first: float  # seconds from submit to the first token
    total: float  # seconds from submit to the last token
    at: list[float]  # each token's time (perf_counter)


async def timed(engine: Engine, prompt: list[int], max_tokens: int, min_tokens: int = 0) -> Timed:
    started = time.perf_counter()
    first = 0.0
    tokens: list[int] = []
    at: list[float] = []
    sampling = Sampling(max_tokens=max_tokens, min_tokens=min_tokens)
    async for token in engine.submit(prompt, sampling):
        at.append(time.perf_counter())
        if not tokens:
            first = at[-1] - started
        tokens.append(token)
    return Timed(tokens, first, time.perf_counter() - started, at)


def overlap_rate(runs: Sequence[Timed]) -> float:
    """Tokens per second said by all ``runs`` together while every one was decoding: from
    the last first token to the earliest last token (0 when the streams never overlapped)."""
    start = max(r.at[0] for r in runs)
    end = min(r.at[-1] for r in runs)
    if end <= start:
        return 0.0
    said = sum(1 for r in runs for t in r.at if start < t <= end)
    return said / (end - start)


@dataclass
class Figures:
    name: str
    prompt_tokens: int
    ttft: float
    decode: float
    load: dict[int, tuple[float, float]]  # concurrency -> (slowest first token, tokens/s)
    streams: dict[int, float]  # concurrency -> aggregate decode tokens/s, all streams running
    replies: list[list[int]]


async def measure(name: str, engine: Engine) -> Figures:
    prompts = [engine.encode_chat(grounded_messages(i)) for i in range(max(CONCURRENCY))]
    await timed(engine, prompts[-1], 4)  # warm-up
    single = await timed(engine, prompts[0], DECODE_TOKENS)
    decode = (len(single.tokens) - 1) / max(single.total - single.first, 1e-9)
    load: dict[int, tuple[float, float]] = {}
    for concurrency in CONCURRENCY:
        started = time.perf_counter()
        runs = await asyncio.gather(
            *(timed(engine, prompts[i], DECODE_TOKENS) for i in range(concurrency))
        )
        wall = time.perf_counter() - started
        load[concurrency] = (max(r.first for r in runs), sum(len(r.tokens) for r in runs) / wall)
    short = [engine.encode_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    streams: dict[int, float] = {}
    for concurrency in STREAMS:
        runs = await asyncio.gather(
            *(timed(engine, short[i], STREAM_TOKENS, STREAM_TOKENS) for i in range(concurrency))
        )
        streams[concurrency] = overlap_rate(runs)
    replies = []
    for prompt in short:
        replies.append((await timed(engine, prompt, AGREEMENT_TOKENS)).tokens)
    return Figures(name, len(prompts[0]), single.first, decode, load, streams, replies)


def agreement(replies: Sequence[list[int]], reference: Sequence[list[int]]) -> tuple[float, float]:
    same = sum(a == b for a, b in zip(replies, reference, strict=True)) / len(reference)
    shares = []
    for a, b in zip(replies, reference, strict=True):
        common = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            common += 1
        shares.append(common / max(len(b), 1))
    return same, sum(shares) / len(shares)


def table(results: list[Figures], load_average: tuple[float, float, float]) -> str:
    reference = results[-1]
    header = (
        "| engine | prompt tokens | first token (s) | decode tok/s | vs reference |"
        + "".join(f" c={c} slowest first (s) / tok/s |" for c in CONCURRENCY)
        + "".join(f" decode {c} streams tok/s |" for c in STREAMS[1:])
        + " greedy same / common prefix |"
    )
    lines = [header, "|" + "---|" * (6 + len(CONCURRENCY) + len(STREAMS) - 1)]
    for figures in results:
        same, prefix = agreement(figures.replies, reference.replies)
        cells = "".join(
            f" {figures.load[c][0]:.2f} / {figures.load[c][1]:.1f} |" for c in CONCURRENCY
        )
        one = figures.streams[1]
        decoded = "".join(
            f" {figures.streams[c]:.1f} ({figures.streams[c] / max(one, 1e-9):.2f}x) |"
            if figures.streams[c]
            else " never together |"
            for c in STREAMS[1:]
        )
        lines.append(
            f"| {figures.name} | {figures.prompt_tokens} | {figures.ttft:.2f} | "
            f"{figures.decode:.1f} | {figures.decode / reference.decode:.2f}x |{cells}"
            f"{decoded} {same:.0%} / {prefix:.0%} |"
        )
    lines.append("")
    lines.append(
        f"Load average before the run: {load_average[0]:.2f} / {load_average[1]:.2f} / "
        f"{load_average[2]:.2f} (1/5/15 min); {os.cpu_count()} CPUs. The reference is plain "
        f"transformers fp32, one request at a time (a request waits for the one before it)."
    )
    return "\n".join(lines)


async def run(
    engines: Sequence[str], precisions: Sequence[str], data_dir: Path, threads: int
) -> list[Figures]:
    results: list[Figures] = []
    if "openvino-genai" in engines:
        directory = resolve(None, data_dir, engine="openvino-genai", precision="int4", device="cpu")
        engine: Engine = OpenVinoEngine(
            directory, max_batch_size=max(CONCURRENCY), max_queue=64, threads=threads
        )
        try:
            results.append(await measure("openvino-genai (GGUF Q4_1)", engine))
        finally:
            engine.close()
        print(table(results, os.getloadavg()), flush=True)
    for precision in precisions if "onnxruntime-genai" in engines else ():
        directory = resolve(
            None,
            data_dir,
            engine="onnxruntime-genai",
            precision=cast(Precision, precision),
            device="cpu",
        )
        engine = OrtGenaiEngine(
            directory, max_batch_size=max(CONCURRENCY), max_queue=64, threads=threads
        )
        try:
            results.append(await measure(f"onnxruntime-genai {precision}", engine))
        finally:
            engine.close()
        print(table(results, os.getloadavg()), flush=True)
    hf_dir = resolve(None, data_dir, engine="transformers", precision="int4", device="cpu")
    reference = TransformersEngine(hf_dir, max_queue=64, threads=threads)
    try:
        results.append(await measure("transformers fp32 (reference)", reference))
    finally:
        reference.close()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="openvino-genai,onnxruntime-genai")
    parser.add_argument(
        "--precisions", default="int4,int8", help="of onnxruntime-genai's converted model"
    )
    parser.add_argument("--data-dir", type=Path, default=Path(".aimesh"))
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-doc", action="store_true", help="print only")
    args = parser.parse_args(argv)
    load_average = os.getloadavg()
    results = asyncio.run(
        run(args.engines.split(","), args.precisions.split(","), args.data_dir, args.threads)
    )
    text = table(results, load_average)
    print(text)
    if not args.no_doc:
        write_section("llm", "Model server engines (make bench-llm)", text)


if __name__ == "__main__":
    main()
