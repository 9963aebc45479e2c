"""Reversible redaction: personal data out of the text sent, back into the text received.

One :class:`Redaction` per request: every text of the request (messages, sources, the
question) goes through :meth:`Redaction.redact`, which replaces each detected value by a
typed placeholder (``<EMAIL_1>``, ``<CARD_2>``); the same value gets the same placeholder
everywhere in the request, so the model can still tell that two mentions are one. The
reply goes through :meth:`Redaction.restore` (whole) or a :class:`StreamRestorer` (in
pieces, holding back the tail of a piece that may be the start of a placeholder until the
next piece decides it). Only placeholders this request made are restored.
"""

from __future__ import annotations

import re
from collections import Counter

from aimesh_llm_router.privacy.detector import Detector, EntityType

# A placeholder as the model writes it back.
PLACEHOLDER = re.compile(r"<([A-Z_]+)_(\d+)>")
# The longest placeholder an unfinished tail may still become ("<IP_ADDRESS_99999>").
_LONGEST_PLACEHOLDER = 24
_PARTIAL = re.compile(r"<[A-Z_]*\d*")


class Redaction:
    """The placeholders of one request and the values they stand for."""

    def __init__(self, detector: Detector) -> None:
        self._detector = detector
        self._by_value: dict[tuple[EntityType, str], str] = {}
        self._values: dict[str, str] = {}
        self._per_type: Counter[EntityType] = Counter()
        # Detected values per entity type (each distinct value once): for the metric.
        self.found: Counter[EntityType] = Counter()

    @property
    def entity_types(self) -> list[EntityType]:
        """The types found so far, sorted."""
        return sorted(self.found)

    def _placeholder(self, entity: EntityType, value: str) -> str:
        key = (entity, value)
        placeholder = self._by_value.get(key)
        if placeholder is None:
            self._per_type[entity] += 1
            self.found[entity] += 1
            placeholder = f"<{entity}_{self._per_type[entity]}>"
            self._by_value[key] = placeholder
            self._values[placeholder] = value
        return placeholder

    def redact(self, text: str) -> str:
        """``text`` with every detected value replaced by its placeholder."""
        findings = self._detector.find(text)
        if not findings:
            return text
        pieces: list[str] = []
        position = 0
        for finding in findings:
            pieces.append(text[position : finding.start])
            pieces.append(self._placeholder(finding.entity, text[finding.start : finding.end]))
            position = finding.end
        pieces.append(text[position:])
        return "".join(pieces)

    def restore(self, text: str) -> str:
        """``text`` with this request's placeholders replaced by their values."""
        if not self._values or "<" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self._values.get(m.group(0), m.group(0)), text)

    def stream(self) -> StreamRestorer:
        return StreamRestorer(self)


class StreamRestorer:
    """Restores a reply that arrives in pieces; a placeholder may be split across them."""

    def __init__(self, redaction: Redaction) -> None:
        self._redaction = redaction
        self._held = ""

    def feed(self, piece: str) -> str:
        """What can be shown of the reply so far, restored; holds back a possible start
        of a placeholder (at most a placeholder's length)."""
        text = self._held + piece
        cut = text.rfind("<")
        if cut != -1 and ">" not in text[cut:]:
            tail = text[cut:]
            if len(tail) < _LONGEST_PLACEHOLDER and _PARTIAL.fullmatch(tail):
                self._held = tail
                return self._redaction.restore(text[:cut])
        self._held = ""
        return self._redaction.restore(text)

    def flush(self) -> str:
        """The held-back rest at the end of the reply."""
        rest, self._held = self._held, ""
        return self._redaction.restore(rest)
