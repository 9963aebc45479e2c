"""Charging one streamed router call exactly once, however it ends.

A call that completes is charged its final ``usage``. One that ends early (the client left,
so the request's task was cancelled; or the stream failed after the model had produced
some text) is charged what the router last said it had spent (``spent`` on its messages:
the prompt alone once the model is called, then the count so far with each piece of
text), flagged as an estimate unless the provider had reported every count. A call that
fails before any token is not charged: the provider answered nothing.

The same figure settles the call's budget reservations (``limits/budgets.py``): the final
usage's cost, the last ``spent``'s cost, or nothing (the reservation is released).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aimesh.llm.v1 import llm_pb2
from aimesh_gateway.stores.usage import Spent

if TYPE_CHECKING:
    from aimesh_gateway.api.deps import UsageContext

RouterMessage = llm_pb2.GenerateResponse | llm_pb2.StreamEvent


def progress_only(message: RouterMessage) -> bool:
    """Whether ``message`` carries nothing but ``spent`` (sent when the model is called)."""
    if isinstance(message, llm_pb2.StreamEvent):
        return message.WhichOneof("event") is None
    return not (
        message.delta or message.tool_calls or message.finish_reason or message.HasField("usage")
    )


class CallUsage:
    """The usage of one streamed call: :meth:`see` each message, then :meth:`completed`
    with the final usage, or :meth:`ended_early` when the call stops before it."""

    def __init__(self, context: UsageContext | None, model: str) -> None:
        self._context = context
        self.model = model
        self.provider = ""
        self.prompt_version = ""
        self._spent: llm_pb2.Usage | None = None
        self._charged = False

    def see(self, message: RouterMessage) -> None:
        if message.HasField("spent"):
            self._spent = message.spent
        if isinstance(message, llm_pb2.GenerateResponse) and message.provider:
            self.provider, self.prompt_version = message.provider, message.prompt_version

    async def completed(
        self, model: str, usage: llm_pb2.Usage, provider: str, prompt_version: str
    ) -> None:
        """Charge the final usage (once)."""
        if self._charged or self._context is None:
            return
        self._charged = True
        await self._context.record(
            model,
            usage.prompt_tokens,
            usage.completion_tokens,
            provider=provider,
            prompt_version=prompt_version,
            estimated=usage.estimated,
            cost_usd=usage.cost_usd,
        )

    def finish(self) -> None:
        """At the end of the call, however it ended: a call charged nothing (it ended
        without a final usage) gives its budget reservations back."""
        if self._charged or self._context is None:
            return
        self._charged = True
        self._context.release_soon()

    def ended_early(self, *, cancelled: bool) -> None:
        """Charge what was spent when the call stops before its final usage: always when
        the client left (``cancelled``), after a failure only if text was generated. The
        record is written off the request path (the request's task is being cancelled)."""
        spent = self._spent
        if self._charged or self._context is None:
            return
        self._charged = True
        if spent is None or (not cancelled and spent.completion_tokens == 0):
            self._context.release_soon()  # charged nothing: its budget reservations go back
            return
        self._context.record_later(
            self.model,
            Spent(
                prompt_tokens=spent.prompt_tokens,
                completion_tokens=spent.completion_tokens,
                estimated=spent.estimated,
                cost_usd=spent.cost_usd,
                provider=self.provider,
                prompt_version=self.prompt_version,
            ),
        )
