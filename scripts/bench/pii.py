"""Personal-data detection: precision and recall per entity type on the labelled set, and
the latency redaction adds to a request; writes the ``pii`` section of docs/benchmarks.md.

``python -m scripts.bench.pii [--no-write]``. The set is tests/data/pii-eval/sentences.jsonl
(built by ``python -m scripts.eval_sets.pii``). A found span counts as a true positive when
it overlaps a labelled span of the same type (each labelled span matched once); a found
span matching nothing is a false positive, a labelled span no found span matches a false
negative. "Covered" is what privacy asks: the share of labelled values that end up inside
some redacted span, whatever type the detector gave it.

The latency is indicative: a few hundred calls on whatever the machine is doing, reported
as medians with the load average, not a timing benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aimesh_llm_router.privacy.detector import ENTITY_TYPES, Detector, Finding, load_detector
from aimesh_llm_router.privacy.redaction import Redaction
from scripts.bench.doc import write_section
from scripts.eval_sets.pii import OUT as SET

CHAT = (
    "Hi, I'm moving house: please update my contact to jane.roe@example.com and my phone "
    "to +44 20 7946 0123, and refund the last order to card 4111 1111 1111 1111."
)
# A grounded request: five retrieved chunks of about 200 words, two holding values.
PARAGRAPH = (
    "The quarterly report covers revenue, hiring and the migration of the billing system to "
    "the new platform. Teams are asked to review the attached figures and send corrections "
    "to the finance office before the end of the month. "
)


@dataclass
class Scores:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    covered: int = 0
    labelled: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def evaluate(detector: Detector, rows: list[dict[str, object]]) -> dict[str, Scores]:
    scores: dict[str, Scores] = {entity: Scores() for entity in ENTITY_TYPES}
    for row in rows:
        text = str(row["text"])
        gold = [(str(e["type"]), int(e["start"]), int(e["end"])) for e in row["entities"]]  # type: ignore[attr-defined]
        found: list[Finding] = detector.find(text)
        matched: set[int] = set()
        for finding in found:
            hit = next(
                (
                    index
                    for index, (kind, start, end) in enumerate(gold)
                    if index not in matched
                    and kind == finding.entity
                    and _overlaps((start, end), (finding.start, finding.end))
                ),
                None,
            )
            if hit is None:
                scores[finding.entity].fp += 1
            else:
                matched.add(hit)
                scores[finding.entity].tp += 1
        for index, (kind, start, end) in enumerate(gold):
            scores[kind].labelled += 1
            if index not in matched:
                scores[kind].fn += 1
            if any(f.start <= start and end <= f.end for f in found):
                scores[kind].covered += 1
    return scores


def _median_ms(call: object, repeat: int) -> float:
    assert callable(call)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def latency(detector: Detector) -> dict[str, float]:
    sources = [PARAGRAPH * 5 for _ in range(5)]
    sources[1] += "Questions go to ops-team@example.org or +1 415-555-0188."
    sources[3] += "Payments: IBAN GB82 WEST 1234 5698 7654 32."
    reply = "Send corrections to <EMAIL_1> [2]; pay <IBAN_1> [4]."

    def chat() -> None:
        redaction = Redaction(detector)
        redaction.redact(CHAT)
        redaction.restore("Updated <EMAIL_1> and <PHONE_1>.")

    def grounded() -> None:
        redaction = Redaction(detector)
        redaction.redact("Where do corrections go?")
        for source in sources:
            redaction.redact(source)
        redaction.restore(reply)

    chat()
    return {
        "chat": _median_ms(chat, 200),
        "grounded": _median_ms(grounded, 30),
        "grounded_words": float(sum(len(s.split()) for s in sources)),
    }


def section(scores: dict[str, Scores], timing: dict[str, float], rows: int) -> str:
    load = os.getloadavg()[0]
    day = datetime.now(UTC).date().isoformat()
    lines = [
        f"Measured {day} on the labelled set `tests/data/pii-eval/sentences.jsonl` ({rows} "
        "sentences, built by `python -m scripts.eval_sets.pii`), with the router's detector "
        "(pattern recognizers with checksums, no NLP model, plus the secret recognizers); "
        "`python -m scripts.bench.pii`.",
        "",
        "| entity | labelled | precision | recall | covered |",
        "|---|---:|---:|---:|---:|",
    ]
    for entity, score in scores.items():
        lines.append(
            f"| {entity} | {score.labelled} | {score.precision:.3f} | {score.recall:.3f} | "
            f"{score.covered / score.labelled if score.labelled else float('nan'):.3f} |"
        )
    total = Scores(
        tp=sum(s.tp for s in scores.values() if s is not scores["PERSON"]),
        fp=sum(s.fp for s in scores.values()),
        fn=sum(s.fn for s in scores.values() if s is not scores["PERSON"]),
    )
    lines += [
        f"| all but PERSON | - | {total.precision:.3f} | {total.recall:.3f} | - |",
        "",
        f"Added latency per request (indicative only: medians on a shared 2-core machine, "
        f"1-minute load average {load:.1f}): a chat message of {len(CHAT.split())} words "
        f"{timing['chat']:.2f} ms; a grounded request (question and five sources, "
        f"{timing['grounded_words']:.0f} words) {timing['grounded']:.2f} ms; detection, "
        "placeholders and restoring the reply.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-write", action="store_true", help="print, do not write the doc")
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(SET).read_text(encoding="utf-8").splitlines()]
    detector = load_detector()
    scores = evaluate(detector, rows)
    timing = latency(detector)
    text = section(scores, timing, len(rows))
    print(text)
    counts = Counter(e["type"] for row in rows for e in row["entities"])
    print(dict(counts))
    if not args.no_write:
        write_section("pii", "Personal data detection", text)


if __name__ == "__main__":
    main()
