"""A misbehaving OpenAI-compatible upstream behind the real mesh (issue 19 §2 and §3).

The router's models file (``tests/faults/conftest.py``) routes ``flaky`` (one attempt of
3 s, no fallback) and ``flaky-chain`` (the same, falling back to ``default``, the local
extractive provider) to a real local HTTP server that misbehaves on command: it hangs
before its headers or halfway through its body, sends malformed JSON or malformed SSE,
answers 500/503/429 with and without Retry-After, drops the connection mid-body, sends an
enormous body (one 48 MiB JSON document, or a 48 MiB stream), or stalls or drops a stream
after its first token.

The contract checked through the gateway, for plain and streamed requests:

- on ``flaky`` every failure before the first token is a 502/503/504 problem+json with a
  detail (429 with Retry-After when the upstream rate-limited), never a 500;
- a failure after the first token ends the stream with an OpenAI ``error`` event instead of
  a hang;
- on ``flaky-chain`` every failure before the first token is answered by ``default``;
- an enormous stream is cut at the request's max_tokens (finish_reason ``length``).

The Retry-After of a 429 or 503 is the upstream's own when it sent one (else the gateway's
1 s). Seen but not asserted: the problem's detail for a 503 is the gateway's generic one (the
router's reason, e.g. "the model provider sent a malformed response", is only in the
gateway's log).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from aimesh_gateway.core.errors import GENERIC_INTERNAL
from aimesh_llm_router.providers.chat import MAX_CHARS_PER_TOKEN
from tests.faults.conftest import UPSTREAM_TIMEOUT_SECONDS, FaultMesh, say
from tests.llm_router.openai_server import Reply

pytestmark = pytest.mark.faults

# Long enough to outlast every timeout of the path; the server stops hanging once the
# router gave up and closed the connection.
HANG_SECONDS = 60.0
# The longest a failing request may take: one attempt's timeout plus the mesh's overhead
# on a shared machine (a fallback to the extractive provider adds next to nothing).
MOST_SECONDS = UPSTREAM_TIMEOUT_SECONDS + 12


def _enormous_completion(megabytes: int) -> str:
    """A well-formed completion whose content alone is ``megabytes`` MiB."""
    content = "lorem ipsum " * (megabytes * 1024 * 1024 // 12)
    return json.dumps(
        {
            "id": "chatcmpl-huge",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "test-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
        }
    )


@dataclass(frozen=True)
class Misbehaviour:
    """What the upstream does, and what the client of ``flaky`` must get (before the
    first token: no stream has started, so a streamed request gets the same problem)."""

    reply: Reply
    statuses: frozenset[int] = frozenset({502, 503, 504})


BEFORE_THE_FIRST_TOKEN: dict[str, Misbehaviour] = {
    "hangs before headers": Misbehaviour(Reply(delay=HANG_SECONDS), frozenset({504})),
    "hangs mid-body": Misbehaviour(Reply(stall_mid_body=HANG_SECONDS), frozenset({504})),
    "malformed JSON": Misbehaviour(
        Reply(raw='{"id": "chatcmpl-x", "choices": [{"index": 0, "message": {"content": "tr')
    ),
    "malformed SSE": Misbehaviour(
        Reply(
            raw="data: {not json at all\n\nevent: ???\ndata: [DONE\n\n",
            raw_content_type="text/event-stream",
        )
    ),
    "HTML instead of JSON": Misbehaviour(
        Reply(raw="<html><body>502 Bad Gateway</body></html>", raw_content_type="text/html")
    ),
    "HTTP 500": Misbehaviour(Reply(status=500)),
    "HTTP 503": Misbehaviour(Reply(status=503)),
    "HTTP 503 with Retry-After": Misbehaviour(Reply(status=503, headers={"Retry-After": "7"})),
    "HTTP 429": Misbehaviour(Reply(status=429), frozenset({429})),
    "HTTP 429 with Retry-After": Misbehaviour(
        Reply(status=429, headers={"Retry-After": "7"}), frozenset({429})
    ),
    "connection closed mid-body": Misbehaviour(Reply(content="cut off", reset_mid_body=True)),
    "enormous JSON body (48 MiB)": Misbehaviour(
        Reply(raw=_enormous_completion(48)), frozenset({502, 503})
    ),
}


def _chat(model: str, *, stream: bool) -> dict[str, Any]:
    content = f"Say hi to {uuid.uuid4().hex}."
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 16,
        "stream": stream,
    }


@dataclass
class Seen:
    """What the client got: status, content type, the problem (or completion) body, the
    stream's events, the Retry-After header and the time it took."""

    status: int
    content_type: str
    body: dict[str, Any]
    events: list[Any]
    retry_after: str | None
    seconds: float

    def summary(self) -> str:
        if self.events:
            last = self.events[-1]
            shown = json.dumps(last)[:160] if not isinstance(last, str) else last
            text = f"{self.status} stream of {len(self.events)} events, last {shown}"
        else:
            detail = self.body.get("detail") or self.body.get("model")
            text = f"{self.status} {self.content_type.split(';')[0]} {detail!r}"
        if self.retry_after is not None:
            text += f", Retry-After {self.retry_after}"
        return f"{text} in {self.seconds:.1f} s"


def _post(mesh: FaultMesh, body: dict[str, Any]) -> Seen:
    """POST /v1/chat/completions; a stream is read to its end (the read timeout fails a
    stream that hangs instead of ending)."""
    started = time.monotonic()
    with (
        httpx.Client(base_url=mesh.url, headers=mesh.admin(), timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        kind = response.headers.get("content-type", "")
        events: list[Any] = []
        parsed: dict[str, Any] = {}
        if kind.startswith("text/event-stream"):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    data = line.removeprefix("data: ")
                    events.append(data if data == "[DONE]" else json.loads(data))
        else:
            parsed = json.loads(response.read())
        return Seen(
            response.status_code,
            kind,
            parsed,
            events,
            response.headers.get("retry-after"),
            time.monotonic() - started,
        )


def _text(events: list[Any]) -> str:
    """The content of a stream's chunks."""
    return "".join(
        event["choices"][0]["delta"].get("content") or ""
        for event in events
        if isinstance(event, dict) and event.get("choices")
    )


def _assert_error_event(seen: Seen) -> None:
    """The stream ended with an OpenAI error event of a 5xx backend failure (not a 500)."""
    last = seen.events[-1]
    assert isinstance(last, dict), seen.events[-3:]
    assert "error" in last, seen.events[-3:]
    assert last["error"]["message"]
    assert last["error"]["message"] != GENERIC_INTERNAL, "the gateway's own 500"


@pytest.fixture
def upstream(fault_mesh: FaultMesh) -> Any:
    server = fault_mesh.upstream.server
    server.reset()
    yield server
    server.reset()


CASES = [(kind, stream) for kind in BEFORE_THE_FIRST_TOKEN for stream in (False, True)]


@pytest.mark.parametrize(("kind", "stream"), CASES, ids=[f"{k}-{s}" for k, s in CASES])
def test_a_failing_upstream_is_a_5xx_problem_with_a_reason(
    fault_mesh: FaultMesh, upstream: Any, kind: str, stream: bool
) -> None:
    misbehaviour = BEFORE_THE_FIRST_TOKEN[kind]
    upstream.always = misbehaviour.reply
    seen = _post(fault_mesh, _chat("flaky", stream=stream))
    say(
        "misbehaving upstream",
        f"flaky ({'streamed' if stream else 'plain'}), upstream {kind}: {seen.summary()}; "
        f"upstream saw {len(upstream.requests)} request(s)",
    )
    assert seen.status in misbehaviour.statuses, seen
    assert seen.content_type.startswith("application/problem+json"), seen
    assert seen.body["status"] == seen.status
    assert seen.body["detail"], seen
    assert seen.body["error"]["message"], seen
    if seen.status in (429, 503):
        # The provider's own wait when it gave one, else the gateway's 1 s.
        asked = misbehaviour.reply.headers.get("Retry-After", "1")
        assert seen.retry_after == asked, seen
    assert seen.seconds < MOST_SECONDS, seen
    assert len(upstream.requests) == 1, "flaky has no retries"


@pytest.mark.parametrize(("kind", "stream"), CASES, ids=[f"{k}-{s}" for k, s in CASES])
def test_the_fallback_alias_answers_for_a_failing_upstream(
    fault_mesh: FaultMesh, upstream: Any, kind: str, stream: bool
) -> None:
    upstream.always = BEFORE_THE_FIRST_TOKEN[kind].reply
    seen = _post(fault_mesh, _chat("flaky-chain", stream=stream))
    say(
        "fallback",
        f"flaky-chain ({'streamed' if stream else 'plain'}) -> default, upstream {kind}: "
        f"{seen.summary()}",
    )
    assert seen.status == 200, seen
    assert seen.seconds < MOST_SECONDS, seen
    if stream:
        assert seen.events[-1] == "[DONE]", seen.events[-3:]
        chunks = [event for event in seen.events[:-1] if "error" not in event]
        assert len(chunks) == len(seen.events) - 1, seen.events[-3:]
        assert {chunk["model"] for chunk in chunks} == {"default"}
        assert _text(chunks)
    else:
        assert seen.body["model"] == "default", seen
        assert seen.body["choices"][0]["message"]["content"], seen
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_an_enormous_reply_is_cut_at_max_tokens(
    fault_mesh: FaultMesh, upstream: Any, stream: bool
) -> None:
    """A 200 stream of 48 MiB (1 MiB events) for max_tokens 16: the answer has started, so it
    is not a 5xx; the router cuts it at 16 x MAX_CHARS_PER_TOKEN characters (finish_reason
    length) and hangs up on the upstream instead of passing 48 MiB on."""
    enormous = "lorem ipsum " * (48 * 1024 * 1024 // 12)
    upstream.always = Reply(content=enormous, chunk_size=1 << 20)
    seen = _post(fault_mesh, _chat("flaky", stream=stream))
    deadline = time.monotonic() + 5
    while not upstream.disconnects and time.monotonic() < deadline:
        time.sleep(0.05)  # the upstream notices the hang-up on its next write
    if stream:
        text = _text(seen.events)
        finish = [e["choices"][0]["finish_reason"] for e in seen.events[:-1] if e["choices"]][-1]
    else:
        text = seen.body["choices"][0]["message"]["content"]
        finish = seen.body["choices"][0]["finish_reason"]
    say(
        "enormous reply",
        f"flaky ({'streamed' if stream else 'plain'}), upstream streams 48 MiB for max_tokens "
        f"16: {seen.status}, {len(text)} characters, finish_reason {finish} in "
        f"{seen.seconds:.1f} s; upstream connection closed early: {upstream.disconnects == 1}",
    )
    assert seen.status == 200
    assert text == enormous[: 16 * MAX_CHARS_PER_TOKEN]
    assert finish == "length"
    assert seen.seconds < MOST_SECONDS, seen
    assert upstream.disconnects == 1


@pytest.mark.parametrize("model", ["flaky", "flaky-chain"])
def test_a_stream_that_stalls_after_its_first_token_ends_with_an_error_event(
    fault_mesh: FaultMesh, upstream: Any, model: str
) -> None:
    """After the first token the answer has started: no fallback (``flaky-chain`` too), the
    stream ends with an error event once the upstream's chunk timeout passed."""
    upstream.always = Reply(content="one two three four", chunk_delay=HANG_SECONDS)
    seen = _post(fault_mesh, _chat(model, stream=True))
    say("stalled stream", f"{model}, upstream stalls after 'one ': {seen.summary()}")
    assert seen.status == 200
    assert seen.seconds < MOST_SECONDS, seen
    assert _text(seen.events) == "one "
    _assert_error_event(seen)


def test_a_stream_cut_after_its_first_token_ends_with_an_error_event(
    fault_mesh: FaultMesh, upstream: Any
) -> None:
    upstream.always = Reply(content="one two three four", break_after=2)
    seen = _post(fault_mesh, _chat("flaky-chain", stream=True))
    say("cut stream", f"flaky-chain, upstream drops after 'one two ': {seen.summary()}")
    assert seen.status == 200
    assert _text(seen.events) == "one two "
    _assert_error_event(seen)
    assert seen.seconds < MOST_SECONDS, seen
