"""Stop sequences: validation and the streaming matcher by hand-checked cases, then through
Generate over real gRPC (the OpenAI-protocol test server and the local provider)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from aimesh.llm.v1 import llm_pb2
from aimesh_common.errors import InvalidArgument
from aimesh_llm_router.config import Settings
from aimesh_llm_router.stops import StopMatcher, validate_stops
from tests.llm_router.conftest import (
    FixedRetrieval,
    RunningRouter,
    models_config,
    openai_model,
    openai_settings,
    start_router,
    stop_router,
)
from tests.llm_router.messages import has_content
from tests.llm_router.openai_server import FakeOpenAI, Reply


def run(stops: list[str], pieces: list[str]) -> tuple[str, list[str], bool]:
    matcher = StopMatcher(stops)
    sent = [matcher.feed(piece) for piece in pieces]
    sent.append(matcher.flush())
    return "".join(sent), sent, matcher.stopped


def test_the_reply_ends_before_the_first_stop_sequence() -> None:
    assert run(["END"], ["one two END three"]) == ("one two ", ["one two ", ""], True)
    # The earliest match wins, whichever sequence it is.
    assert run(["b", "a"], ["xxaxb"])[0] == "xx"


def test_a_sequence_split_over_pieces_is_held_back_then_cut() -> None:
    text, sent, stopped = run(["\n\nUser:"], ["Hello.", "\n", "\nUs", "er: next", " more"])
    assert (text, stopped) == ("Hello.", True)
    # Nothing of the stop sequence was ever sent, and nothing after it.
    assert sent == ["Hello.", "", "", "", "", ""]


def test_a_false_start_is_released_when_the_text_goes_on() -> None:
    text, sent, stopped = run(["STOP"], ["ab ST", "ART and S", "TO"])
    assert stopped is False
    assert sent == ["ab ", "START and ", "", "STO"]
    assert text == "ab START and STO"


def test_no_stops_passes_everything_through() -> None:
    assert run([], ["a", "b"]) == ("ab", ["a", "b", ""], False)


def test_validation_names_the_bad_sequence() -> None:
    assert validate_stops(["\n", "END"]) == ("\n", "END")
    with pytest.raises(InvalidArgument, match="at most 4"):
        validate_stops(["a", "b", "c", "d", "e"])
    with pytest.raises(InvalidArgument, match=r"stop\[1\] must not be empty"):
        validate_stops(["a", ""])
    with pytest.raises(InvalidArgument, match=r"stop\[0\] must be at most 200"):
        validate_stops(["x" * 201])


@pytest.fixture
async def stopping_router(
    fake_openai: FakeOpenAI, embedding_addr: str, retrieval_server: tuple[FixedRetrieval, str]
) -> AsyncIterator[RunningRouter]:
    """``default`` (openai on the test server) and ``extractive`` (local)."""
    config = models_config(
        {"default": openai_model(fake_openai.base_url), "extractive": {"provider": "local"}}
    )
    settings: Settings = openai_settings(
        fake_openai.base_url,
        retrieval_service_addr=retrieval_server[1],
        embedding_service_addr=embedding_addr,
    )
    running = await start_router(settings, config)
    yield running
    await stop_router(running)


async def generate(
    router: RunningRouter, model: str, text: str, stop: list[str]
) -> tuple[str, list[llm_pb2.GenerateResponse]]:
    request = llm_pb2.GenerateRequest(
        model=model, messages=[llm_pb2.ChatMessage(role="user", content=text)], stop=stop
    )
    replies = [
        reply async for reply in router.stub.Generate(request, timeout=20) if has_content(reply)
    ]
    return "".join(reply.delta for reply in replies), replies


async def test_stop_reaches_the_upstream_and_is_enforced_when_it_is_ignored(
    stopping_router: RunningRouter, fake_openai: FakeOpenAI
) -> None:
    # The test server ignores "stop", as some OpenAI-compatible servers do.
    fake_openai.enqueue(Reply(content="Alpha beta END gamma delta", finish_reason="length"))
    text, replies = await generate(stopping_router, "default", "Say it.", ["END", "\n\n"])
    assert fake_openai.requests[-1].body["stop"] == ["END", "\n\n"]
    assert text == "Alpha beta "
    assert replies[-1].finish_reason == "stop"
    assert replies[-1].usage.completion_tokens > 0


async def test_stop_cuts_the_local_provider_too(stopping_router: RunningRouter) -> None:
    story = "The mill stood by the river. Its wheel turned all day. What turned all day?"
    full, _ = await generate(stopping_router, "extractive", story, [])
    assert "wheel" in full
    cut, replies = await generate(stopping_router, "extractive", story, ["wheel"])
    assert cut == full[: full.index("wheel")]
    assert replies[-1].finish_reason == "stop"


async def test_bad_stop_sequences_are_invalid_argument(stopping_router: RunningRouter) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await generate(stopping_router, "default", "Hi.", ["a", "b", "c", "d", "e"])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 4" in (caught.value.details() or "")
