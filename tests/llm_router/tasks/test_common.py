"""What the tasks share, tested without gRPC: the temperature check and the closing
events of a stream nothing answered (the max_tokens cap is tested in test_generate)."""

from __future__ import annotations

import pytest

from aimesh.llm.v1 import llm_pb2
from aimesh_common.errors import InvalidArgument
from aimesh_llm_router.tasks.common import StreamOutcome, closing_events, temperature


def test_temperature_is_optional_and_checked() -> None:
    assert temperature(llm_pb2.GenerateRequest()) is None
    assert temperature(llm_pb2.GenerateRequest(temperature=0.0)) == 0.0
    assert temperature(llm_pb2.SendMessageRequest(temperature=2.0)) == 2.0
    for bad in (-0.5, 2.5):
        with pytest.raises(InvalidArgument, match="temperature must be between 0 and 2"):
            temperature(llm_pb2.SendMessageRequest(temperature=bad))


def test_a_stream_nothing_answered_closes_with_a_bare_done() -> None:
    [event] = closing_events(StreamOutcome(), "chat")
    assert event.WhichOneof("event") == "done"
    assert (event.done.model, event.done.finish_reason, event.done.provider) == ("", "stop", "")
