"""Reading the router's streams in tests: the messages that carry more than ``spent``."""

from __future__ import annotations

from aimesh.llm.v1 import llm_pb2


def has_content(message: llm_pb2.GenerateResponse | llm_pb2.StreamEvent) -> bool:
    """False for a message carrying only the tokens spent so far (sent when the model is
    called, before its first token)."""
    if isinstance(message, llm_pb2.StreamEvent):
        return message.WhichOneof("event") is not None
    return bool(
        message.delta or message.tool_calls or message.finish_reason or message.HasField("usage")
    )
