"""The labelled personal-data set and its benchmark: the committed file is what the script
builds, its labels are right (cards pass Luhn, IBANs mod 97), and the detector keeps the
precision and recall docs/benchmarks.md reports."""

from __future__ import annotations

import json
import random

import pytest

from aimesh_llm_router.privacy.detector import load_detector
from scripts.bench.pii import Scores, evaluate
from scripts.eval_sets import pii

ROWS = [json.loads(line) for line in pii.OUT.read_text(encoding="utf-8").splitlines()]


def _luhn_ok(digits: str) -> bool:
    return pii.luhn_digit(digits[:-1]) == digits[-1]


def _iban_ok(value: str) -> bool:
    compact = value.replace(" ", "").replace("-", "").upper()
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def test_the_committed_set_is_what_the_script_builds() -> None:
    assert pii.build() == ROWS
    assert len(ROWS) >= 300
    assert len({row["id"] for row in ROWS}) == len(ROWS)


def test_labels_are_well_formed_and_valid() -> None:
    counts: dict[str, int] = {}
    for row in ROWS:
        for entity in row["entities"]:
            value = row["text"][entity["start"] : entity["end"]]
            assert value.strip() == value != "", row
            counts[entity["type"]] = counts.get(entity["type"], 0) + 1
            digits = "".join(c for c in value if c.isdigit())
            if entity["type"] == "CARD":
                assert _luhn_ok(digits), row
            if entity["type"] == "IBAN":
                assert _iban_ok(value), row
    assert all(counts[kind] >= 20 for kind in pii.GENERATORS), counts
    negatives = [row for row in ROWS if not row["entities"]]
    assert len(negatives) >= 50


def test_invalid_lookalikes_fail_their_checks() -> None:
    rng = random.Random(1)
    for _ in range(50):
        assert not _luhn_ok("".join(c for c in pii.card(rng, valid=False) if c.isdigit()))
        assert not _iban_ok(pii.iban(rng, valid=False))


@pytest.fixture(scope="module")
def scores() -> dict[str, Scores]:
    return evaluate(load_detector(), ROWS)


@pytest.mark.parametrize("kind", ["EMAIL", "PHONE", "CARD", "IBAN", "IP_ADDRESS", "SECRET"])
def test_detector_quality_on_the_set(scores: dict[str, Scores], kind: str) -> None:
    assert scores[kind].recall >= 0.9, (kind, scores[kind])
    assert scores[kind].precision >= 0.85, (kind, scores[kind])


def test_person_names_are_not_detected(scores: dict[str, Scores]) -> None:
    """No named-entity model is loaded (docs/privacy.md): say so, measured."""
    assert scores["PERSON"].tp == 0
    assert scores["PERSON"].labelled >= 20
