"""Stop sequences, enforced by the router whatever the provider does with them.

Providers that support ``stop`` get it too (so the upstream stops generating early), but a
provider may ignore it (the local ones) or end a piece in the middle of a sequence; the
router's own matcher makes the result the same everywhere: the reply ends right before the
first stop sequence, which is never sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from aimesh_common.errors import InvalidArgument

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 200


def validate_stops(stops: Sequence[str]) -> tuple[str, ...]:
    """The request's stop sequences, or INVALID_ARGUMENT naming the bad one."""
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidArgument(
            f"stop takes at most {MAX_STOP_SEQUENCES} sequences (got {len(stops)})"
        )
    for index, stop in enumerate(stops):
        if not stop:
            raise InvalidArgument(f"stop[{index}] must not be empty")
        if len(stop) > MAX_STOP_CHARS:
            raise InvalidArgument(f"stop[{index}] must be at most {MAX_STOP_CHARS} characters")
    return tuple(stops)


class StopMatcher:
    """Cuts a streamed text before the first stop sequence.

    Text that might be the beginning of a stop sequence is held back until the next piece
    shows whether it is; ``flush`` releases it at the end of the stream.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of ``text`` (after what was held back) that is safe to send now."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        found = [at for at in (buffer.find(stop) for stop in self._stops) if at >= 0]
        if found:
            self.stopped = True
            self._held = ""
            return buffer[: min(found)]
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """What was held back, now known not to start a stop sequence (the stream ended)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest end of ``buffer`` that begins some stop sequence."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
