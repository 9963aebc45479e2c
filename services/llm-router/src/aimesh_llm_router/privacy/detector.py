"""Finding personal data in text: pattern recognizers with checksums, no NLP model.

E-mail addresses (the domain checked against the public-suffix list bundled with
``tldextract``), phone numbers (Google's libphonenumber, ``phonenumbers``), payment card
numbers (Luhn), IBANs (ISO 7064 mod-97 checksum and the country's format) and IPv4/IPv6
addresses (parsed by :mod:`ipaddress`), plus secrets: keys with a known prefix (OpenAI,
Anthropic, AWS, GitHub, GitLab, Slack, Google, Stripe, Hugging Face, aimesh, JWTs, PEM
private keys) and long high-entropy tokens. Person names need a named-entity model; none
is loaded (see docs/privacy.md), so they are not detected.

The e-mail, card, IBAN, IP and phone recognizers are those of Microsoft Presidio's
``presidio-analyzer`` 2.2 (MIT licence: patterns, scores, validation and the IBAN formats
per country), written out here so that the router does not install Presidio, which
brings spaCy and its stack for a tokenizer these recognizers never use (the router image
went from 434 to 349 MB without them). ``tests/llm_router/test_privacy.py`` and
``make bench-pii`` hold them to the same results on the labelled set.
"""

from __future__ import annotations

import ipaddress
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import regex

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
# Results below this score are ignored (phone numbers score 0.4, IP addresses 0.6; validated
# e-mails, cards and IBANs 1.0; candidates that fail a checksum are dropped).
MIN_SCORE = 0.35
VALIDATED = 1.0

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

# Presidio's patterns, compiled as Presidio does: with the ``regex`` module (whose ``\w``
# also matches combining marks, unlike ``re``'s) and DOTALL | MULTILINE | IGNORECASE (the
# IBAN's without IGNORECASE).
_FLAGS = regex.DOTALL | regex.MULTILINE | regex.IGNORECASE
_EMAIL = (
    r"\b((([!#$%&'*+\-/=?^_`{|}~\w])|([!#$%&'*+\-/=?^_`{|}~\w][!#$%&'*+\-/=?^_`{|}~\.\w]{0,}"
    r"[!#$%&'*+\-/=?^_`{|}~\w]))[@]\w+(?:-+\w+)*(?:\.\w+(?:-+\w+)*)+)\b"
)
_CARD = (
    r"\b(?!1\d{12}(?!\d))((4\d{3})|(5[0-5]\d{2})|(6\d{3})|(1\d{3})|(3\d{3}))[- ]?(\d{3,4})"
    r"[- ]?(\d{3,4})[- ]?(\d{3,5})\b"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
_IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_V6_PREFIX = r"(?:/(?:12[0-8]|1[01]\d|[1-9]?\d))?"
_H = r"[0-9A-Fa-f]{1,4}"
_IP_PATTERNS = (
    rf"(?<![\w:])::(?:ffff(?::0{{1,4}})?:)?{_IPV4}{_V6_PREFIX}\b",  # IPv4-mapped
    rf"(?<![\w:])(?:(?:{_H}:){{1,5}}:(?:{_H}:){{0,4}}|(?:{_H}:){{6}}){_IPV4}{_V6_PREFIX}\b",
    rf"\b{_IPV4}(?:/(?:[0-2]?\d|3[0-2]))?\b",
    rf"(?<![\w:])(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,7}}:|:(?::{_H}){{1,7}}|(?:{_H}:){{1,6}}:{_H}"
    rf"|(?:{_H}:){{1,5}}(?::{_H}){{1,2}}|(?:{_H}:){{1,4}}(?::{_H}){{1,3}}"
    rf"|(?:{_H}:){{1,3}}(?::{_H}){{1,4}}|(?:{_H}:){{1,2}}(?::{_H}){{1,5}}"
    rf"|{_H}:(?::{_H}){{1,6}}|:(?::{_H}){{1,6}})(?:%[0-9a-zA-Z]+)?{_V6_PREFIX}(?![\w:]|\.\d)",
)
# Country code, check digits, 2-6 groups of four, then an optional fifth group and an
# optional tail of 1-3: tried longest first, so "DE89... 2 days" drops the stray "2".
_IBAN = (
    r"(?<![A-Z0-9])([A-Z]{2}[0-9]{2}(?:[ -]?[A-Z0-9]{4}){2,6})"
    r"((?:[ -]?[A-Z0-9]{4})?)((?:[ -]?[A-Z0-9]{1,3})?)(?![A-Z0-9])"
)
# The account part (BBAN) per country, after the country code and check digits: counts of
# digits (n), upper-case letters (a) and letters or digits (c). From Presidio's table.
_BBAN_FORMATS = {
    "AD": "8n12c", "AE": "19n", "AL": "8n16c", "AT": "16n", "AZ": "4c20n", "BA": "16n",
    "BE": "12n", "BG": "4a6n8c", "BH": "4a14c", "BR": "23n1a1c", "BY": "4c4n16c",
    "CH": "5n12c", "CR": "0/17n", "CY": "8n16c", "CZ": "20n", "DE": "18n", "DK": "14n",
    "DO": "4a20n", "EE": "16n", "EG": "25n", "ES": "20n", "FI": "14n", "FO": "14n",
    "FR": "10n11c2n", "GB": "4a14n", "GE": "2c16n", "GI": "4a15c", "GL": "14n", "GR": "7n16c",
    "GT": "24c", "HR": "17n", "HU": "24n", "IE": "4c14n", "IL": "19n", "IQ": "4a15n",
    "IS": "22n", "IT": "1a10n12c", "JO": "4a22n", "KW": "4a22c", "KZ": "3n13c", "LB": "4n20c",
    "LC": "4a24c", "LI": "5n12c", "LT": "16n", "LU": "3n13c", "LV": "4a13c", "LY": "21n",
    "MC": "10n11c2n", "MD": "20c", "ME": "18n", "MK": "3n10c2n", "MR": "23n", "MT": "4a5n18c",
    "MU": "4a19n1a", "NL": "4a10n", "NO": "11n", "PK": "4c16n", "PL": "24n", "PS": "4c17n",
    "PT": "17n", "QA": "4a17c", "RO": "4a16c", "RS": "18n", "SA": "2n18c", "SC": "4a20n3a",
    "SE": "20n", "SI": "15n", "SK": "20n", "SM": "1a10n12c", "TL": "19n", "TN": "20n",
    "TR": "5n17c", "UA": "6n19c", "VA": "18n", "VG": "4c16n", "XK": "16n",
}  # fmt: skip
_BBAN_CLASSES = {"n": "[0-9]", "a": "[A-Z]", "c": "[a-zA-Z0-9]"}
_IBAN_DIGITS = {ord(d): str(i) for i, d in enumerate(string.digits + string.ascii_uppercase)}
# libphonenumber's matcher runs once per region; Presidio's default regions.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")
PHONE_SCORE = 0.4
# Leniency VALID: a number that is possible and valid for its region.
_PHONE_LENIENCY = 1


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


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (payment card numbers)."""
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _bban_regex(spec: str) -> re.Pattern[str]:
    parts = []
    for piece in spec.split("/"):
        if piece == "0":
            parts.append("0")
            continue
        for count, kind in re.findall(r"(\d+)([nac])", piece):
            parts.append(f"{_BBAN_CLASSES[kind]}{{{count}}}")
    return re.compile("".join(parts))


_BBAN_REGEXES = {country: _bban_regex(spec) for country, spec in _BBAN_FORMATS.items()}


def iban_valid(candidate: str) -> bool | None:
    """Presidio's IBAN validation of ``candidate`` (separators removed): its mod-97 check
    digits and its country's format. True: valid; None: valid only in upper case (the
    pattern's score stands); False: not an IBAN."""
    value = candidate.replace("-", "").replace(" ", "")
    try:
        rearranged = (value[4:] + value[:2].upper() + "00").upper().translate(_IBAN_DIGITS)
        check = f"{98 - int(rearranged) % 97:0>2}"
    except ValueError:
        return False
    if check != value[2:4]:
        return False
    if _iban_format(value):
        return True
    return None if _iban_format(value.upper()) else False


def _iban_format(value: str) -> bool:
    bban = _BBAN_REGEXES.get(value[:2])
    return bban is not None and bban.match(value, 4) is not None


_Validate = Callable[[str], "bool | None"]


@dataclass(frozen=True)
class _Pattern:
    """One pattern of a recognizer: its matches score ``score``, then ``validate`` (when
    given) makes a match VALIDATED (True), drops it (False) or keeps the score (None)."""

    compiled: Any  # a regex.Pattern
    score: float
    validate: _Validate | None = None

    def matches(self, text: str, entity: EntityType) -> Iterator[Finding]:
        for match in self.compiled.finditer(text):
            if match.start() == match.end():
                continue
            score = self.score
            if self.validate is not None:
                verdict = self.validate(match.group())
                if verdict is False:
                    continue
                if verdict:
                    score = VALIDATED
            yield Finding(match.start(), match.end(), entity, score)


def _patterns(
    regexes: tuple[str, ...], score: float, validate: _Validate | None = None
) -> tuple[_Pattern, ...]:
    return tuple(_Pattern(regex.compile(source, _FLAGS), score, validate) for source in regexes)


def _ip_valid(text: str) -> bool:
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return True


def _card_valid(text: str) -> bool:
    return luhn_valid(text.replace("-", "").replace(" ", ""))


def _ibans(text: str) -> Iterator[Finding]:
    """Presidio's IBAN recognizer: for each match, the longest of its three lengths whose
    checksum and format hold."""
    for match in _IBAN_REGEX.finditer(text):
        for group in (3, 2, 1):
            end = match.end(group) if match.end(group) > 0 else match.end()
            candidate = text[match.start() : end]
            if not candidate:
                continue
            verdict = iban_valid(candidate)
            if verdict is False:
                continue
            yield Finding(match.start(), end, "IBAN", VALIDATED if verdict else 0.5)
            break


_IBAN_REGEX = regex.compile(_IBAN, regex.DOTALL | regex.MULTILINE)


# Where a phone number may be: digits with separators, seven characters or more. The phone
# matcher (libphonenumber, once per region) is by far the slowest recognizer; it runs on
# these windows only, not on the whole text.
_PHONE_WINDOW = re.compile(r"[+(]?\d[\d \t().\-/]{5,}\d")
# Characters of context kept around a window (an extension, a closing parenthesis).
_PHONE_MARGIN = 2
# An address has no white space: the (costly) e-mail pattern runs on the words holding an @.
_EMAIL_WORD = re.compile(r"[^\s<>()\[\]\"',;:]*@[^\s<>()\[\]\"',;:]+")


class Detector:
    """Finds personal data in text; thread-safe (the recognizers hold no state per call)."""

    def __init__(self, entities: tuple[EntityType, ...] = ENTITY_TYPES) -> None:
        import phonenumbers
        import tldextract

        self.entities = frozenset(entities)
        self._phonenumbers: Any = phonenumbers
        # The bundled public-suffix snapshot only: the default extractor downloads the list.
        suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
        self._email = _patterns((_EMAIL,), 0.5, lambda text: bool(suffixes(text).fqdn))
        self._others: tuple[tuple[EntityType, tuple[_Pattern, ...]], ...] = (
            ("CARD", _patterns((_CARD,), 0.3, _card_valid)),
            # An address ipaddress cannot parse is dropped; the others keep the score 0.6.
            ("IP_ADDRESS", _patterns(_IP_PATTERNS, 0.6, lambda t: None if _ip_valid(t) else False)),
            ("SECRET", _patterns(tuple(source for _, source in KNOWN_SECRET_PATTERNS), 0.9)),
            (
                "SECRET",
                _patterns((HIGH_ENTROPY_PATTERN,), 0.5, lambda text: looks_random(text) or False),
            ),
        )

    def _phones(self, text: str, offset: int) -> Iterator[Finding]:
        seen: set[tuple[int, int]] = set()
        for region in PHONE_REGIONS:
            matcher = self._phonenumbers.PhoneNumberMatcher(text, region, _PHONE_LENIENCY)
            for match in matcher:
                span = (match.start + offset, match.end + offset)
                if span not in seen:
                    seen.add(span)
                    yield Finding(span[0], span[1], "PHONE", PHONE_SCORE)

    def _results(self, text: str) -> list[Finding]:
        results: list[Finding] = []
        for entity, patterns in self._others:
            for pattern in patterns:
                results.extend(pattern.matches(text, entity))
        results.extend(_ibans(text))
        for word in _EMAIL_WORD.finditer(text):
            for pattern in self._email:
                for found in pattern.matches(word.group(), "EMAIL"):
                    start, end = found.start + word.start(), found.end + word.start()
                    results.append(Finding(start, end, "EMAIL", found.score))
        taken = [(r.start, r.end) for r in results if r.score >= MIN_SCORE]
        for window in _PHONE_WINDOW.finditer(text):
            if any(start <= window.start() and window.end() <= end for start, end in taken):
                continue  # already a card, an IBAN, an IP address
            start = max(0, window.start() - _PHONE_MARGIN)
            end = min(len(text), window.end() + _PHONE_MARGIN)
            results.extend(self._phones(text[start:end], start))
        return results

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in ``text``, in order; where two overlap the longer
        (then the higher-scored) wins, so a card number is never also half a phone."""
        if not text:
            return []
        candidates = [
            f for f in self._results(text) if f.score >= MIN_SCORE and f.entity in self.entities
        ]
        candidates.sort(key=lambda f: (-(f.end - f.start), -f.score, f.start))
        kept: list[Finding] = []
        for finding in candidates:
            if all(finding.end <= k.start or finding.start >= k.end for k in kept):
                kept.append(finding)
        return sorted(kept, key=lambda f: f.start)


def load_detector(entities: tuple[EntityType, ...] = ENTITY_TYPES) -> Detector:
    """A detector; ValueError (the router then exits with status 2) naming the missing
    package when ``phonenumbers`` or ``tldextract`` cannot be imported: a policy that redacts
    or blocks never runs without its detector."""
    try:
        return Detector(entities)
    except ImportError as error:
        raise ValueError(f"the privacy policy redact/block needs its detector: {error}") from None
