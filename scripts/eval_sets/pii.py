"""The labelled personal-data set: sentences with the exact spans of every value in them.

``python -m scripts.eval_sets.pii`` writes tests/data/pii-eval/sentences.jsonl, one sentence
a line: ``{"id", "text", "entities": [{"type", "start", "end"}]}`` with the types of
:mod:`aimesh_llm_router.privacy.detector` (EMAIL, PHONE, CARD, IBAN, IP_ADDRESS, SECRET,
PERSON). Values are generated, not collected: cards pass the Luhn check and IBANs the
mod-97 check because they are built to; a seeded generator makes the file the same on
every run (a test checks that the committed file is what this script writes).

Besides sentences with one or more values of each type, the set holds look-alikes that
are not personal data and must not be found: dates, times, versions, prices, order and
tracking numbers, card numbers failing Luhn, IBANs failing their checksum, UUIDs,
commit hashes, hyphenated words; and person names, labelled PERSON, which the router does
not detect without a named-entity model (their recall is reported as measured).
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "pii-eval" / "sentences.jsonl"
SEED = 24

FIRST = ["Maria", "John", "Aiko", "Lars", "Fatima", "Chen", "Olga", "Pedro", "Amara", "Tom"]
LAST = ["Gonzalez", "Smith", "Tanaka", "Nilsen", "Haddad", "Wei", "Ivanova", "Silva", "Okafor"]
DOMAINS = ["example.com", "mail.example.org", "company.de", "uni.edu", "startup.io", "post.co.uk"]


def luhn_digit(partial: str) -> str:
    """The check digit making ``partial`` + digit pass the Luhn check."""
    total = 0
    for index, char in enumerate(reversed(partial)):
        digit = int(char)
        if index % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def card(rng: random.Random, valid: bool = True) -> str:
    prefix, length = rng.choice(
        [("4", 16), ("51", 16), ("55", 16), ("34", 15), ("37", 15), ("6011", 16)]
    )
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    digits = body + check
    style = rng.choice(["spaces", "dashes", "plain"])
    if length == 15:
        groups = [digits[:4], digits[4:10], digits[10:]]
    else:
        groups = [digits[i : i + 4] for i in range(0, 16, 4)]
    if style == "plain":
        return digits
    return (" " if style == "spaces" else "-").join(groups)


def _iban_check(country: str, bban: str) -> str:
    moved = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in moved))
    return f"{98 - number % 97:02d}"


def iban(rng: random.Random, valid: bool = True) -> str:
    country, shape = rng.choice(
        [
            ("DE", "n18"),
            ("GB", "a4n14"),
            ("NL", "a4n10"),
            ("FR", "n23"),
            ("ES", "n20"),
            ("IT", "a1n22"),
        ]
    )
    letters = int(shape[1]) if shape.startswith("a") else 0
    digits = int(shape.split("n")[1])
    bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(letters))
    bban += "".join(rng.choice(string.digits) for _ in range(digits))
    check = _iban_check(country, bban)
    if not valid:
        check = f"{(int(check) + rng.randint(1, 50)) % 97 + 2:02d}"
        if check == _iban_check(country, bban):
            check = f"{(int(check) + 1) % 97 + 2:02d}"
    compact = country + check + bban
    if rng.random() < 0.3:
        return compact
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def email(rng: random.Random) -> str:
    first, last = rng.choice(FIRST).lower(), rng.choice(LAST).lower()
    local = rng.choice(
        [
            f"{first}.{last}",
            f"{first[0]}{last}",
            f"{first}_{last}{rng.randint(1, 99)}",
            f"{first}+news",
        ]
    )
    return f"{local}@{rng.choice(DOMAINS)}"


def phone(rng: random.Random) -> str:
    n = rng.randint(100, 199)
    return rng.choice(
        [
            f"(212) 555-0{n}",
            f"+1 415-555-0{n}",
            f"415.555.0{n}",
            f"+44 20 7946 0{n}",
            f"020 7946 0{n}",
            f"+49 30 901820{n % 100:02d}",
            f"+33 1 42 68 5{n % 10} {n % 100:02d}",
            f"+91 98765 4{n}1",
        ]
    )


def ip(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return f"2001:db8:{rng.randint(1, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"
    return ".".join(
        str(part)
        for part in (
            rng.choice([10, 172, 192, 203, 198, 81]),
            rng.randint(0, 255),
            rng.randint(0, 255),
            rng.randint(1, 254),
        )
    )


def _token(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def secret(rng: random.Random) -> str:
    b62 = string.ascii_letters + string.digits
    kind = rng.randrange(9)
    if kind == 0:
        return "sk-proj-" + _token(rng, b62, 32)
    if kind == 1:
        return "AKIA" + _token(rng, string.ascii_uppercase + string.digits, 16)
    if kind == 2:
        return "ghp_" + _token(rng, b62, 36)
    if kind == 3:
        return (
            "xoxb-"
            + "-".join(_token(rng, string.digits, 11) for _ in range(2))
            + "-"
            + _token(rng, b62, 24)
        )
    if kind == 4:
        return "AIza" + _token(rng, b62 + "-_", 35)
    if kind == 5:
        return "sk_live_" + _token(rng, b62, 24)
    if kind == 6:
        return "hf_" + _token(rng, b62, 34)
    if kind == 7:
        return (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOi"
            + _token(rng, b62, 20)
            + "."
            + _token(rng, b62 + "-_", 43)
        )
    return _token(rng, b62, rng.randint(28, 40))


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


TEMPLATES: dict[str, list[str]] = {
    "EMAIL": [
        "Please send the signed contract to {} before Friday.",
        "My address changed, write to {} from now on.",
        "CC {} on the ticket so finance sees it.",
        "The newsletter bounced for {} again.",
    ],
    "PHONE": [
        "You can reach the night shift at {}.",
        "Call me back on {} after the meeting.",
        "The courier left a note: ring {} on arrival.",
        "Her mobile is {} if the office line is busy.",
    ],
    "CARD": [
        "The refund goes back to card {}.",
        "I paid with {} but the charge appears twice.",
        "Please update the card on file to {}.",
        "Card number {} was declined at checkout.",
    ],
    "IBAN": [
        "Transfer the deposit to IBAN {}.",
        "Our new bank account is {}.",
        "Salary should be paid into {} from March.",
        "The supplier's IBAN {} is on the invoice.",
    ],
    "IP_ADDRESS": [
        "Logins from {} were blocked overnight.",
        "The staging server answers on {}.",
        "Whitelist {} for the partner's VPN.",
        "The printer got the address {} from DHCP.",
    ],
    "SECRET": [
        "Use the key {} in the deployment config.",
        "I accidentally pasted {} into the chat.",
        "Rotate the token {} before the audit.",
        "Set API_TOKEN={} in the environment.",
    ],
    "PERSON": [
        "Please forward this to {} before Friday.",
        "{} approved the budget yesterday.",
        "The onboarding of {} starts next week.",
        "Ask {} about the migration plan.",
    ],
}

GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "EMAIL": email,
    "PHONE": phone,
    "CARD": card,
    "IBAN": iban,
    "IP_ADDRESS": ip,
    "SECRET": secret,
    "PERSON": person,
}


def _hard(rng: random.Random) -> list[tuple[str, str, str, str]]:
    """Values written as people do and the detector may not expect: (type, before, value,
    after). Some are beyond patterns on purpose (an obfuscated address, a plain password)."""
    b62 = string.ascii_letters + string.digits
    digits = card(rng).replace(" ", "").replace("-", "")
    compact_iban = iban(rng).replace(" ", "")
    n = rng.randint(100, 199)
    key = "".join(rng.choice(b62) for _ in range(40))
    return [
        ("EMAIL", "Mail ", email(rng).upper(), " for access."),
        ("EMAIL", "From: Support <", email(rng), ">"),
        ("EMAIL", "Write to ", "jane dot doe at example dot com", " (spelled out)."),
        ("PHONE", "Call ", f"415555{n:04d}", " after lunch."),
        ("PHONE", "Phone: ", f"0049 30 1234{n}", "."),
        ("PHONE", "Tel. ", f"+1-212-555-0{n}", " (desk)."),
        ("CARD", "card#", digits, " was charged."),
        ("CARD", "Card: ", f"{digits[:4]}  {digits[4:8]}  {digits[8:]}", "."),
        ("IBAN", "iban ", compact_iban.lower(), " please."),
        (
            "IBAN",
            "Account ",
            "-".join(compact_iban[i : i + 4] for i in range(0, len(compact_iban), 4)),
            ".",
        ),
        ("IP_ADDRESS", "Connect to ip=", ip(rng), ":8080 now."),
        ("IP_ADDRESS", "The host [", f"2001:db8::{n}", "]:443 is up."),
        ("SECRET", "my password is ", f"Summer{rng.randint(2019, 2026)}!", " do not share."),
        (
            "SECRET",
            "",
            f"-----BEGIN RSA PRIVATE KEY-----\n{key}\n-----END RSA PRIVATE KEY-----",
            "",
        ),
        (
            "SECRET",
            "export GITHUB_TOKEN=",
            "github_pat_" + "".join(rng.choice(b62) for _ in range(60)),
            "",
        ),
    ]


def _negatives(rng: random.Random) -> list[str]:
    hexd = "0123456789abcdef"
    out: list[str] = []

    def r(low: int, high: int) -> int:
        return rng.randint(low, high)

    def uuid() -> str:
        parts = (_token(rng, hexd, 8), _token(rng, hexd, 4), _token(rng, hexd, 3))
        return f"{parts[0]}-{parts[1]}-4{parts[2]}-a{_token(rng, hexd, 3)}-{_token(rng, hexd, 12)}"

    makers: list[Callable[[], str]] = [
        lambda: (
            f"The release on {r(2019, 2026)}-{r(1, 12):02d}-{r(1, 28):02d} fixed {r(2, 90)} bugs."
        ),
        lambda: f"Version {r(1, 9)}.{r(0, 30)}.{r(0, 30)} requires Python 3.{r(9, 13)}.",
        lambda: f"Order {r(10000, 99999)} ships at {r(1, 12)}:{r(0, 59):02d} pm.",
        lambda: f"The invoice total is ${r(1, 9)},{r(100, 999)}.{r(10, 99)} including tax.",
        lambda: f"Card {card(rng, valid=False)} is a test number that fails validation.",
        lambda: f"The form rejected IBAN {iban(rng, valid=False)} as mistyped.",
        lambda: f"Request id {uuid()} failed.",
        lambda: f"See the configuration-reference-for-{rng.choice(['jobs', 'operators'])} page.",
        lambda: f"Room {r(100, 999)} on floor {r(1, 20)} seats {r(4, 40)} people.",
        lambda: (
            f"The parcel weighs {r(1, 30)}.{r(0, 9)} kg and measures {r(10, 99)} x {r(10, 99)} cm."
        ),
        lambda: (
            f"Tracking code {rng.choice(['JD', 'LX', 'RR'])}{r(10**8, 10**9 - 1)}GB is on its way."
        ),
        lambda: f"Revert commit {_token(rng, hexd, 40)} before tagging.",
        lambda: f"The meeting is at 10.{r(10, 59)} in building {r(1, 9)}.",
        lambda: "Use the placeholder user@localhost in examples only.",
    ]
    for index in range(70):
        out.append(makers[index % len(makers)]())
    return out


def build() -> list[dict[str, object]]:
    rng = random.Random(SEED)
    rows: list[dict[str, object]] = []

    def add(text: str, entities: list[tuple[str, int, int]]) -> None:
        rows.append(
            {
                "id": f"s{len(rows) + 1:04d}",
                "text": text,
                "entities": [{"type": t, "start": s, "end": e} for t, s, e in entities],
            }
        )

    for entity, templates in TEMPLATES.items():
        count = 24 if entity == "PERSON" else 36
        for index in range(count):
            template = templates[index % len(templates)]
            value = GENERATORS[entity](rng)
            start = template.index("{}")
            add(template.format(value), [(entity, start, start + len(value))])
    # Several values in one sentence.
    kinds = [k for k in GENERATORS if k != "PERSON"]
    for _ in range(30):
        first, second = rng.sample(kinds, 2)
        a, b = GENERATORS[first](rng), GENERATORS[second](rng)
        prefix = "Contact details: "
        text = f"{prefix}{a}; backup {b}."
        start_b = len(prefix) + len(a) + len("; backup ")
        add(text, [(first, len(prefix), len(prefix) + len(a)), (second, start_b, start_b + len(b))])
    for _ in range(2):
        for kind, before, value, after in _hard(rng):
            add(before + value + after, [(kind, len(before), len(before) + len(value))])
    for text in _negatives(rng):
        add(text, [])
    return rows


def write(path: Path = OUT) -> int:
    rows = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def main() -> None:
    print(f"wrote {write()} sentences to {OUT}")


if __name__ == "__main__":
    main()
