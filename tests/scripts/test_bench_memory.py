"""The memory benchmark's building blocks (the benchmark itself is ``make bench-memory``)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from scripts.bench.memory import SlowStreams, slope


def test_the_slow_server_keeps_a_stream_open_one_chunk_a_second() -> None:
    with SlowStreams(hold=0.5) as server:
        url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
        started = time.monotonic()
        body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.stream("POST", url, json=body, timeout=10, trust_env=False) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        took = time.monotonic() - started
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line[6:]) for line in lines[:-1]]
        assert [c["choices"][0]["delta"].get("content") for c in chunks[:-1]] == ["word "]
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert took >= 1.0  # the second chunk came a second after the first
        plain = httpx.post(url, json={**body, "stream": False}, trust_env=False).json()
        assert plain["choices"][0]["message"]["content"] == "ok"


def test_slope_is_a_least_squares_fit() -> None:
    assert slope([0, 1000, 2000], [100.0, 104.0, 108.0]) == pytest.approx(0.004)
    assert slope([5, 5], [1.0, 2.0]) == 0.0
