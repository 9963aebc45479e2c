"""Finding personal data in text: Presidio's pattern recognizers, without an NLP model.

Presidio (``presidio-analyzer``) recognizes e-mail addresses (with a public-suffix check),
phone numbers (Google's libphonenumber), payment card numbers (Luhn), IBANs (ISO 7064
mod-97 checksum) and IPv4/IPv6 addresses; two recognizers of our own, built on its
``PatternRecognizer``, find secrets: keys with a known prefix (OpenAI, Anthropic, AWS,
GitHub, GitLab, Slack, Google, Stripe, Hugging Face, aimesh, JWTs, PEM private keys) and
long high-entropy tokens. Person names need a named-entity model; none is loaded (see
docs/privacy.md), so they are not detected.

The recognizers are called directly: Presidio's AnalyzerEngine would first run a spaCy
pipeline over the text for context words, which the pattern recognizers do not need.
Importing Presidio costs seconds (it imports spaCy), so :func:`load_detector` is called
once, at start, only when some alias redacts or blocks.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from presidio_analyzer import EntityRecognizer, RecognizerResult

EntityType = Literal["EMAIL", "PHONE", "CARD", "IBAN", "IP_ADDRESS", "SECRET", "PERSON"]
ENTITY_TYPES: tuple[EntityType, ...] = (
    "EMAIL",
    "PHONE",
    "CARD",
    "IBAN",
    "IP_ADDRESS",
    "SECRET",
    "PERSON",
)
# Presidio's entity names -> ours (the placeholder names: <EMAIL_1>, <CARD_2>, ...).
_FROM_PRESIDIO: dict[str, EntityType] = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP_ADDRESS",
    "SECRET": "SECRET",
    "PERSON": "PERSON",
}
# Results below this score are ignored (Presidio scores phone numbers 0.4, IPs 0.6;
# validated e-mails, cards and IBANs 1.0; candidates that fail a checksum are dropped).
MIN_SCORE = 0.35

# Keys with a known shape. Each pattern is anchored on a prefix a provider documents.
KNOWN_SECRET_PATTERNS: tuple[tuple[str, str], ...] = (
    ("openai or anthropic key", r"\bsk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
    ("aws access key id", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"),
    ("github token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b"),
    ("gitlab token", r"\bglpat-[A-Za-z0-9_\-]{20,}"),
    ("slack token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    ("google api key", r"\bAIza[0-9A-Za-z_\-]{35}"),
    ("stripe key", r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}"),
    ("hugging face token", r"\bhf_[A-Za-z0-9]{30,}\b"),
    ("aimesh api key", r"\bam_[A-Za-z0-9]{4,16}_[A-Za-z0-9_\-]{20,}"),
    ("json web token", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    (
        "pem private key",
        r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]+?-----END (?:[A-Z]+ )*PRIVATE KEY-----",
    ),
)
# A token of 24 or more characters of the alphabets keys are written in.
HIGH_ENTROPY_PATTERN = r"(?<![A-Za-z0-9_\-+/=])[A-Za-z0-9_\-+/=]{24,}(?![A-Za-z0-9_\-+/=])"
# Bits per character above which such a token is taken for a secret (random base62 of 24
# characters is about 4.3; English words joined by dashes stay below 3.9).
MIN_ENTROPY_BITS = 3.9
# Hexadecimal tokens have at most 4 bits per character: their own, lower threshold.
MIN_HEX_ENTROPY_BITS = 3.3
MIN_HEX_LENGTH = 32


@dataclass(frozen=True)
class Finding:
    """A span of text holding personal data (never logged: it is the value itself)."""

    start: int
    end: int
    entity: EntityType
    score: float


def shannon_entropy(token: str) -> float:
    """Bits per character of ``token``'s character distribution."""
    counts = Counter(token)
    total = len(token)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def looks_random(token: str) -> bool:
    """Whether ``token`` is a high-entropy string (a key, a password hash) rather than
    words, a path or a number."""
    hexadecimal = all(c in "0123456789abcdefABCDEF" for c in token)
    if hexadecimal:
        return (
            len(token) >= MIN_HEX_LENGTH
            and any(c.isdigit() for c in token)
            and any(c.isalpha() for c in token)
            and shannon_entropy(token) >= MIN_HEX_ENTROPY_BITS
        )
    classes = sum(
        (
            any(c.islower() for c in token),
            any(c.isupper() for c in token),
            any(c.isdigit() for c in token),
        )
    )
    return classes == 3 and shannon_entropy(token) >= MIN_ENTROPY_BITS


@contextmanager
def _without_nlp_backends() -> Iterator[None]:
    """presidio-analyzer tries ``transformers`` (and, through thinc, ``torch``) at import
    only to offer NER pipelines this module does not use; where they are installed that
    import alone takes seconds and hundreds of megabytes. They are hidden for the import
    (and importable again right after it)."""
    hidden = [name for name in _NLP_BACKENDS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hidden:
            sys.modules.pop(name, None)


_NLP_BACKENDS = ("torch", "transformers", "stanza", "gliner")
# The recognizers used here need no NLP artifacts (context words): they get none.
_NO_NLP: Any = None


def _recognizers() -> tuple[EntityRecognizer, EntityRecognizer, list[EntityRecognizer]]:
    """The e-mail recognizer, the phone recognizer, and the others."""
    with _without_nlp_backends():
        from presidio_analyzer import Pattern, PatternRecognizer
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
        )
    import tldextract

    # The bundled public-suffix snapshot only: the default extractor downloads the list.
    offline_suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return bool(offline_suffixes(pattern_text).fqdn)

    class EntropyRecognizer(PatternRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return looks_random(pattern_text)

    known = PatternRecognizer(
        supported_entity="SECRET",
        name="KnownSecretRecognizer",
        patterns=[Pattern(name, regex, 0.9) for name, regex in KNOWN_SECRET_PATTERNS],
    )
    entropy = EntropyRecognizer(
        supported_entity="SECRET",
        name="HighEntropyRecognizer",
        patterns=[Pattern("high entropy token", HIGH_ENTROPY_PATTERN, 0.5)],
    )
    others: list[EntityRecognizer] = [
        CreditCardRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
        known,
        entropy,
    ]
    return OfflineEmailRecognizer(), PhoneRecognizer(), others


# Where a phone number may be: digits with separators, seven characters or more. The phone
# recognizer (libphonenumber's matcher, once per region) is by far the slowest; it runs on
# these windows only, not on the whole text.
_PHONE_WINDOW = re.compile(r"[+(]?\d[\d \t().\-/]{5,}\d")
# Characters of context kept around a window (an extension, a closing parenthesis).
_PHONE_MARGIN = 2
_EMAIL_WORD = re.compile(r"[^\s<>()\[\]\"',;:]*@[^\s<>()\[\]\"',;:]+")


def _shifted(
    recognizer: EntityRecognizer, piece: str, offset: int, entity: str
) -> list[RecognizerResult]:
    """``recognizer``'s results on ``piece``, a part of the text starting at ``offset``."""
    found: list[RecognizerResult] = recognizer.analyze(piece, [entity], nlp_artifacts=_NO_NLP)
    for result in found:
        result.start += offset
        result.end += offset
    return found


class Detector:
    """Finds personal data in text; thread-safe (the recognizers hold no state per call)."""

    def __init__(self, entities: tuple[EntityType, ...] = ENTITY_TYPES) -> None:
        self.entities = frozenset(entities)
        self._email, self._phone, self._others = _recognizers()

    def _results(self, text: str) -> list[RecognizerResult]:
        results: list[RecognizerResult] = []
        for recognizer in self._others:
            results.extend(
                recognizer.analyze(text, recognizer.supported_entities, nlp_artifacts=_NO_NLP)
            )
        # An address has no white space: the (costly) e-mail pattern runs on the
        # white-space-delimited words holding an "@" only.
        for word in _EMAIL_WORD.finditer(text):
            results.extend(_shifted(self._email, word.group(), word.start(), "EMAIL_ADDRESS"))
        taken = [(r.start, r.end) for r in results if r.score >= MIN_SCORE]
        for window in _PHONE_WINDOW.finditer(text):
            if any(start <= window.start() and window.end() <= end for start, end in taken):
                continue  # already a card, an IBAN, an IP address
            start = max(0, window.start() - _PHONE_MARGIN)
            end = min(len(text), window.end() + _PHONE_MARGIN)
            results.extend(_shifted(self._phone, text[start:end], start, "PHONE_NUMBER"))
        return results

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in ``text``, in order; where two overlap the longer
        (then the higher-scored) wins, so a card number is never also half a phone."""
        if not text:
            return []
        results = self._results(text)
        candidates = [
            Finding(r.start, r.end, _FROM_PRESIDIO[r.entity_type], r.score)
            for r in results
            if r.score >= MIN_SCORE
            and r.entity_type in _FROM_PRESIDIO
            and _FROM_PRESIDIO[r.entity_type] in self.entities
        ]
        candidates.sort(key=lambda f: (-(f.end - f.start), -f.score, f.start))
        kept: list[Finding] = []
        for finding in candidates:
            if all(finding.end <= k.start or finding.start >= k.end for k in kept):
                kept.append(finding)
        return sorted(kept, key=lambda f: f.start)


def load_detector(entities: tuple[EntityType, ...] = ENTITY_TYPES) -> Detector:
    """A detector; ValueError (the router then exits with status 2) naming the missing
    package when Presidio cannot be imported: a policy that redacts or blocks never runs
    without its detector."""
    try:
        return Detector(entities)
    except ImportError as error:
        raise ValueError(
            f"the privacy policy redact/block needs presidio-analyzer: {error}"
        ) from None
