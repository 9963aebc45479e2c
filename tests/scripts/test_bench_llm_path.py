"""The LLM-path profiler's parts (the run itself is ``python -m scripts.bench.llm_path``): its
mock upstream speaks the OpenAI protocol well enough for the router's provider, and the
py-spy report adds samples up per function."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from scripts.bench.llm_path import _mock_connection, report


async def test_the_mock_answers_whole_and_streamed_completions_on_one_connection() -> None:
    server = await asyncio.start_server(_mock_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            whole = await http.post("/v1/chat/completions", json={"model": "m", "messages": []})
            assert whole.json()["choices"][0]["message"]["content"] == "Four words of answer."
            streamed = await http.post(
                "/v1/chat/completions", json={"model": "m", "messages": [], "stream": True}
            )
            assert streamed.headers["content-type"] == "text/event-stream"
            events = [
                json.loads(line.removeprefix("data: "))
                for line in streamed.text.splitlines()
                if line.startswith("data: {")
            ]
            text = "".join(
                choice["delta"].get("content", "") for e in events for choice in e["choices"]
            )
            assert text == "Four words of answer."
            assert events[-1]["usage"]["total_tokens"] == 17
            assert streamed.text.endswith("data: [DONE]\n\n")
    finally:
        server.close()
        await server.wait_closed()


def test_report_counts_own_and_inclusive_time(tmp_path: Path) -> None:
    collapsed = tmp_path / "router.txt"
    main, work = "main (aimesh_llm_router/main.py:1)", "work (aimesh_llm_router/x.py:3)"
    collapsed.write_text(
        f"{main};{work};dumps (json/__init__.py:9) 3\n"
        f"{main};{work} 1\n"
        f"{main};select (selectors.py:2) 50\n"
    )
    text = report(collapsed, 5)
    assert "4 busy samples" in text  # the idle select is left out
    assert " 75.0%  dumps (__init__.py)" in text
    assert "100.0%  work (x.py)" in text
