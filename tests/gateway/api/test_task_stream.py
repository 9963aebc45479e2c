"""The SSE form of the router's stream events that say an answer was replaced."""

from __future__ import annotations

import json

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.api.task_stream import format_event


def parsed(text: str) -> tuple[str, dict[str, object]]:
    name_line, data_line, *_ = text.split("\n")
    return name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))


def test_a_replace_event_carries_the_whole_reply() -> None:
    event = llm_pb2.StreamEvent(replace="Built in 1887 [1].")
    assert parsed(format_event(event)) == ("replace", {"text": "Built in 1887 [1]."})


def test_done_says_which_answer_was_replaced_and_why() -> None:
    done = llm_pb2.StreamDone(
        model="default",
        finish_reason="stop",
        provider="local",
        fallback_reason="invalid_citations",
        replaced_model="local-model",
    )
    name, payload = parsed(format_event(llm_pb2.StreamEvent(done=done), "rid-1"))
    assert name == "done"
    assert payload == {
        "model": "default",
        "finish_reason": "stop",
        "provider": "local",
        "prompt_version": "",
        "fallback_reason": "invalid_citations",
        "replaced_model": "local-model",
        "request_id": "rid-1",
    }
