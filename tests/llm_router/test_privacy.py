"""The privacy layer of the router: detection, reversible redaction, streamed restoration,
the guard around a provider, and the policy each alias and tenant gets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Self

import pytest
from prometheus_client import REGISTRY

from aimesh_common.errors import PersonalDataRefused
from aimesh_llm_router.citations import Source
from aimesh_llm_router.config import Settings
from aimesh_llm_router.modelconfig import (
    LOCAL_MODEL_ALIAS,
    ModelConfigError,
    ModelSpec,
    default_models_config,
    validate_models_config,
)
from aimesh_llm_router.models import alias_privacy, needs_detector
from aimesh_llm_router.privacy.detector import (
    Detector,
    iban_valid,
    load_detector,
    looks_random,
    luhn_valid,
)
from aimesh_llm_router.privacy.guard import PrivacyGuard
from aimesh_llm_router.privacy.redaction import Redaction
from aimesh_llm_router.providers import PROVIDERS
from aimesh_llm_router.providers.base import (
    AnswerTask,
    Completion,
    Delta,
    GenerateTask,
    Message,
    Provider,
    ProviderContext,
    SummarizeTask,
)
from aimesh_llm_router.tokens import Usage
from aimesh_llm_router.tools import ToolCall


@pytest.fixture(scope="module")
def detector() -> Detector:
    return load_detector()


def found(detector: Detector, text: str) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start : f.end]) for f in detector.find(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "write to jane.roe+news@mail.example.co.uk today",
            ("EMAIL", "jane.roe+news@mail.example.co.uk"),
        ),
        ("call (212) 555-0199 after five", ("PHONE", "(212) 555-0199")),
        ("ring +44 20 7946 0958 now", ("PHONE", "+44 20 7946 0958")),
        ("card 5555-5555-5555-4444 expired", ("CARD", "5555-5555-5555-4444")),
        ("pay to GB82 WEST 1234 5698 7654 32 please", ("IBAN", "GB82 WEST 1234 5698 7654 32")),
        ("host 10.20.30.40 is down", ("IP_ADDRESS", "10.20.30.40")),
        ("the key AKIAIOSFODNN7EXAMPLE leaked", ("SECRET", "AKIAIOSFODNN7EXAMPLE")),
        (
            "token ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5 here",
            ("SECRET", "ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5"),
        ),
        (
            "pass Zx9Qw2Er7Ty4Ui1Op3As6Df8Gh5Jk0Lz along",
            ("SECRET", "Zx9Qw2Er7Ty4Ui1Op3As6Df8Gh5Jk0Lz"),
        ),
        # The IBAN's longest reading whose checksum holds: not the stray "2" after it.
        (
            "my deposit in DE89370400440532013000 2 days from today",
            ("IBAN", "DE89370400440532013000"),
        ),
        # A letter written with a combining accent is part of the address's local part.
        ("from jose\u0301@example.com today", ("EMAIL", "jose\u0301@example.com")),
        ("amex 378282246310005 on file", ("CARD", "378282246310005")),
        ("link-local fe80::1 answers", ("IP_ADDRESS", "fe80::1")),
    ],
)
def test_each_entity_type_is_found(
    detector: Detector, text: str, expected: tuple[str, str]
) -> None:
    assert found(detector, text) == [expected]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails the Luhn check",
        "IBAN DE89 3704 0044 0532 0130 01 fails the checksum",
        "release 2.14.3 shipped on 2024-01-15 with 1234 fixes",
        "see the well-known-configuration-reference-guide page",
        "version 10.20.30 is not an address",
        "999.1.1.1 and 10.0.0.256 are not addresses either",
        "a mail to nobody@example.invalidtld has no public suffix",
        "no personal data in this sentence at all",
    ],
)
def test_lookalikes_are_not_found(detector: Detector, text: str) -> None:
    assert found(detector, text) == []


def test_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert luhn_valid("378282246310005")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") is True
    assert iban_valid("GB82-WEST-1234-5698-7654-32") is True
    assert iban_valid("GB83WEST12345698765432") is False  # check digits
    assert iban_valid("DE89370400440532013000") is True
    assert iban_valid("DE8937040044053201300") is False  # a digit short: the checksum
    assert iban_valid("ZZ89370400440532013000") is False  # no such country
    # The checksum holds but Germany's account part is 18 digits, not letters.
    assert iban_valid("DE35ABCD0044053201300099") is False


def test_high_entropy_needs_mixed_alphabets() -> None:
    assert looks_random("Zx9Qw2Er7Ty4Ui1Op3As6Df8")
    assert not looks_random("configuration-reference-guide")
    assert not looks_random("aaaaaaaaaaaaaaaaaaaaaaaaaaaaAAAA1111")
    assert looks_random("3f786850e387550fdab836ed7e6dc881de23001b")  # 40 hex digits


def test_same_value_same_placeholder_and_restore(detector: Detector) -> None:
    redaction = Redaction(detector)
    first = redaction.redact("mail a@example.com or b@example.com")
    second = redaction.redact("again a@example.com, from 10.0.0.1")
    assert first == "mail <EMAIL_1> or <EMAIL_2>"
    assert second == "again <EMAIL_1>, from <IP_ADDRESS_1>"
    assert redaction.entity_types == ["EMAIL", "IP_ADDRESS"]
    assert redaction.restore("to <EMAIL_2> not <EMAIL_9> nor <b>") == (
        "to b@example.com not <EMAIL_9> nor <b>"
    )


def test_a_placeholder_split_anywhere_in_a_stream_is_restored(detector: Detector) -> None:
    redaction = Redaction(detector)
    redaction.redact("mail a@example.com, host 10.0.0.1")
    reply = "Sent <EMAIL_1> to <IP_ADDRESS_1>; a < b and <tag> stay.<"
    expected = "Sent a@example.com to 10.0.0.1; a < b and <tag> stay.<"
    for size in range(1, len(reply) + 1):
        restorer = redaction.stream()
        pieces = [reply[i : i + size] for i in range(0, len(reply), size)]
        shown = [restorer.feed(piece) for piece in pieces]
        assert "".join(shown) + restorer.flush() == expected, size
        assert not any("<EMAIL" in piece or "IP_ADDRESS_" in piece for piece in shown)


class Recording(Provider):
    """A provider that records the tasks it gets and answers with scripted text (in
    pieces of ``chunk`` characters when streaming), echoing the placeholders it saw."""

    name = "recording"
    supports_tools = True

    def __init__(self, reply: str, chunk: int = 3, calls: tuple[ToolCall, ...] = ()) -> None:
        self.reply = reply
        self.chunk = chunk
        self.calls = calls
        self.tasks: list[object] = []

    @classmethod
    def from_model(cls, spec: ModelSpec, context: ProviderContext) -> Self:
        raise NotImplementedError

    def describe(self) -> str:
        return "recording"

    async def summarize(self, task: SummarizeTask) -> Completion:
        self.tasks.append(task)
        return Completion(self.reply, Usage(1, 1, estimated=False))

    async def answer(self, task: AnswerTask) -> Completion:
        self.tasks.append(task)
        return Completion(self.reply, Usage(1, 1, estimated=False))

    async def generate(self, task: GenerateTask) -> AsyncIterator[Delta]:
        self.tasks.append(task)
        for start in range(0, len(self.reply), self.chunk):
            yield Delta(self.reply[start : start + self.chunk])
        yield Delta(
            "",
            finish_reason="tool_calls" if self.calls else "stop",
            usage=Usage(1, 1, estimated=False),
            tool_calls=self.calls,
        )


SECRET_MESSAGES = [
    Message("system", "Support is at help@example.com."),
    Message("user", "My card is 4111 1111 1111 1111, call +1 415-555-0132."),
    Message(
        "assistant", "", tool_calls=(ToolCall("c1", "lookup", '{"email": "help@example.com"}'),)
    ),
    Message("tool", "owner: 10.1.2.3", tool_call_id="c1"),
]
VALUES = ("help@example.com", "4111 1111 1111 1111", "+1 415-555-0132", "10.1.2.3")


def detections(alias: str, entity: str, action: str) -> float:
    value = REGISTRY.get_sample_value(
        "aimesh_llm_privacy_detections_total",
        {"alias": alias, "entity_type": entity, "action": action},
    )
    return value or 0.0


async def test_generate_sends_placeholders_and_streams_values_back(detector: Detector) -> None:
    inner = Recording(
        "Card <CARD_1> belongs to <EMAIL_1>.",
        calls=(ToolCall("c2", "notify", '{"to": "<PHONE_1>"}'),),
    )
    guard = PrivacyGuard(inner, "redact", detector, "hosted")
    before = detections("hosted", "CARD", "redacted")
    task = GenerateTask(SECRET_MESSAGES, 64, None, stop=("help@example.com",))
    deltas = [delta async for delta in guard.generate(task)]
    assert (
        "".join(d.text for d in deltas) == "Card 4111 1111 1111 1111 belongs to help@example.com."
    )
    assert deltas[-1].tool_calls == (ToolCall("c2", "notify", '{"to": "+1 415-555-0132"}'),)
    sent = repr(inner.tasks)
    assert not any(value in sent for value in VALUES)
    assert "<CARD_1>" in sent
    assert "<IP_ADDRESS_1>" in sent
    assert detections("hosted", "CARD", "redacted") == before + 1
    assert guard.name == "recording"


async def test_the_guard_offers_what_its_provider_can_do(detector: Detector) -> None:
    """A guarded alias keeps its provider's tools and JSON-format support, and the format
    reaches the provider (the Responses API's text.format through a redacting alias)."""
    inner = Recording("{}")
    inner.supports_response_format = True
    guard = PrivacyGuard(inner, "redact", detector, "hosted")
    assert guard.supports_tools is True
    assert guard.supports_response_format is True
    assert PrivacyGuard(Recording("{}"), "redact", detector, "h").supports_response_format is False
    response_format = {"type": "json_object"}
    task = GenerateTask(SECRET_MESSAGES, 64, None, response_format=response_format)
    [delta async for delta in guard.generate(task)]
    [sent] = inner.tasks
    assert isinstance(sent, GenerateTask)
    assert sent.response_format == response_format


async def test_answer_and_summarize_redact_every_source(detector: Detector) -> None:
    inner = Recording("From <EMAIL_1> [1] and <IBAN_1> [2].")
    guard = PrivacyGuard(inner, "redact", detector, "hosted")
    sources = [
        Source(1, "Write to ops@example.com."),
        Source(2, "Pay GB82 WEST 1234 5698 7654 32."),
    ]
    answer = await guard.answer(AnswerTask("Who is ops@example.com?", sources, 64))
    assert answer.text == "From ops@example.com [1] and GB82 WEST 1234 5698 7654 32 [2]."
    streamed = [d async for d in guard.stream_answer(AnswerTask("Who?", sources, 64))]
    assert "".join(d.text for d in streamed) == answer.text
    summary = await guard.summarize(SummarizeTask("Mail ops@example.com", "brief", 50, 64))
    assert summary.text.startswith("From ops@example.com")
    assert "ops@example.com" not in repr(inner.tasks)
    assert "GB82" not in repr(inner.tasks)


async def test_block_refuses_naming_the_types_and_calls_nothing(detector: Detector) -> None:
    inner = Recording("never")
    guard = PrivacyGuard(inner, "block", detector, "hosted")
    with pytest.raises(PersonalDataRefused) as refused:
        _ = [d async for d in guard.generate(GenerateTask(SECRET_MESSAGES, 64, None))]
    assert refused.value.entity_types == ["CARD", "EMAIL", "IP_ADDRESS", "PHONE"]
    assert refused.value.trailers == (
        ("aimesh-personal-data-types", "CARD,EMAIL,IP_ADDRESS,PHONE"),
    )
    assert not any(value in refused.value.message for value in VALUES)
    assert inner.tasks == []
    clean = await guard.summarize(SummarizeTask("Nothing personal here.", "brief", 50, 64))
    assert clean.text == "never"


def test_policy_of_each_alias_and_tenant() -> None:
    config = validate_models_config(
        {
            "models": {
                "default": {"provider": "openai", "model": "m"},
                "fast": {"provider": "local"},
                "tgi": {"provider": "huggingface", "base_url": "http://tgi:80"},
                "inproc": {"provider": "huggingface", "model": "/models/tiny"},
                "strict": {"provider": "openai", "model": "m", "privacy": "block"},
                "own": {"provider": "openai", "model": "m", "privacy": "off"},
            },
            "privacy": {"tenants": {"t1": {"default": "block", "models": {"own": "redact"}}}},
        },
        "test",
        frozenset(PROVIDERS),
        environ={},
    )
    own = {alias: alias_privacy(config, alias) for alias in config.models}
    assert own == {
        "default": "redact",
        "fast": "off",
        "tgi": "redact",
        "inproc": "off",
        "strict": "block",
        "own": "off",
    }
    assert config.privacy.policy("t1", "own", "off") == "redact"
    assert config.privacy.policy("t1", "fast", "off") == "block"
    assert config.privacy.policy("t2", "fast", "off") == "off"
    assert needs_detector(config)


def test_unknown_alias_in_a_tenant_override_is_reported() -> None:
    with pytest.raises(ModelConfigError) as error:
        validate_models_config(
            {
                "models": {"default": {"provider": "local"}},
                "privacy": {"tenants": {"t1": {"models": {"ghost": "off"}}}},
            },
            "test",
            frozenset(PROVIDERS),
            environ={},
        )
    assert "privacy.tenants.t1.models: unknown alias 'ghost'" in str(error.value)


def test_the_local_configuration_needs_no_detector() -> None:
    settings = Settings(llm_local_model_url="http://127.0.0.1:8081/v1")
    config = default_models_config(settings)
    assert config.models[LOCAL_MODEL_ALIAS].privacy == "off"
    assert not needs_detector(config)
