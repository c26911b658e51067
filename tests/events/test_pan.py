"""Card numbers (issue 15, items 17 and 18): every network's PANs are caught in every
separator and digit form, and identifiers such as UUIDs are never taken for one."""

from __future__ import annotations

import base64
import json
import random
import time
import uuid

import msgspec
import pytest

from ringfence.events.decode import decode_batch
from ringfence.events.pan import is_card_number, looks_like_pan, luhn_valid, number_is_pan
from ringfence.events.sensitive import find_pan
from ringfence.testing import event
from tests.helpers.linear import assert_linear


def with_check_digit(body: str) -> str:
    """``body`` plus the digit that makes it pass Luhn."""
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def pan(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return with_check_digit(body)


def test_luhn_agrees_with_the_checksum_as_published() -> None:
    def published(digits: str) -> bool:  # ISO/IEC 7812-1 annex B, digit by digit
        total = 0
        for position, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if position % 2 else 1)
            total += d // 10 + d % 10
        return total % 10 == 0

    rng = random.Random(7812)
    samples = ["0", "18", "79927398713", "4111111111111111", "4111111111111112"]
    samples += ["".join(rng.choices("0123456789", k=rng.randint(1, 25))) for _ in range(20_000)]
    assert [luhn_valid(s) for s in samples] == [published(s) for s in samples]
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    # only ASCII digits make a number that can pass: not nothing, full-width digits or a separator
    assert [luhn_valid(s) for s in ("", "\uff10", "4111-1111-1111-1111", "\ud800")] == [False] * 4
    assert not is_card_number("\uff14111111111111111")


# (network, prefix, length) — at least one of every prefix range, at the edges of each
NETWORKS = [
    ("Visa", "4", 16),
    ("Visa 13", "4", 13),
    ("Visa 19", "4", 19),
    ("Mastercard", "51", 16),
    ("Mastercard", "55", 16),
    ("Mastercard 2-series", "2221", 16),
    ("Mastercard 2-series", "2720", 16),
    ("Mir", "2200", 16),
    ("Mir", "2204", 16),
    ("Mir 19", "2202", 19),
    ("American Express", "34", 15),
    ("American Express", "37", 15),
    ("Diners Club", "300", 14),
    ("Diners Club", "305", 16),
    ("Diners Club", "36", 14),
    ("Diners Club", "3095", 16),
    ("Diners Club", "38", 16),
    ("JCB", "3528", 16),
    ("JCB", "3589", 19),
    ("Discover", "6011", 16),
    ("Discover", "644", 16),
    ("Discover", "65", 19),
    ("UnionPay", "62", 16),
    ("UnionPay", "62", 19),
    ("UnionPay", "81", 16),
    ("RuPay", "60", 16),
    ("RuPay", "508", 16),
    ("RuPay", "82", 16),
    ("RuPay (JCB co-brand)", "353", 16),
    ("Troy", "9792", 16),
    ("Troy", "65", 16),
    ("Maestro", "50", 13),
    ("Maestro", "6759", 19),
    ("Maestro", "56", 16),
    ("Verve", "506099", 16),
    ("Elo", "636368", 16),
    ("Dankort", "5019", 16),
    ("UzCard", "8600", 16),
    ("Humo", "9860", 16),
    ("UATP", "1", 15),
]
GROUPINGS = {13: (4, 4, 5), 14: (4, 6, 4), 15: (4, 6, 5), 16: (4, 4, 4, 4), 17: (4, 4, 4, 4, 1), 19: (4, 4, 4, 4, 3)}
SEPARATORS = [
    " ",
    "-",
    ".",
    "/",
    "_",
    ",",
    "  ",
    " - ",
    "\u00a0",
    "\u2009",
    "\u202f",
    "\u2013",
    "\u2014",
    "\u2212",
    "\u200b",
    ":",
    "|",
    "+",
    ";",
    "*",
    "'",
    "~",
    "\u2022",  # bullet
    "\u00b7",  # middle dot
    "\u2800",  # braille blank
    "    ",  # four spaces: a bank prefers rejecting it
    " -- ",
    " \u00a0- ",
    "\u2009\u2013\u2009",
]
ZERO = {  # the digit zero of some Unicode scripts: each of its digits is zero + n
    "full-width": 0xFF10,
    "arabic-indic": 0x0660,
    "devanagari": 0x0966,
    "bengali": 0x09E6,
    "thai": 0x0E50,
    "mathematical bold": 0x1D7CE,
}


def grouped(digits: str, separator: str) -> str:
    sizes, parts, at = GROUPINGS.get(len(digits), (4,) * (len(digits) // 4) + (len(digits) % 4,)), [], 0
    for size in sizes:
        if size:
            parts.append(digits[at : at + size])
            at += size
    return separator.join(parts)


def in_script(digits: str, zero: int) -> str:
    return "".join(chr(zero + int(d)) for d in digits)


def forms(digits: str) -> list[tuple[str, str]]:
    """(label, text): every way the PAN ``digits`` may be written."""
    found = [("plain", digits)]
    found += [(f"separator {sep!r}", grouped(digits, sep)) for sep in SEPARATORS]
    found += [(script, in_script(digits, zero)) for script, zero in ZERO.items()]
    found.append(("full-width, ideographic spaces", grouped(in_script(digits, ZERO["full-width"]), "\u3000")))
    found.append(("zero-width between every digit", "\u200b".join(digits)))
    found.append(("soft hyphens", grouped(digits, "\u00ad")))
    found.append(("in a sentence", f"card: {grouped(digits, ' ')} (exp 12/29)"))
    found.append(("in a URL", f"/pay?pan={digits}&cvv=123"))
    found.append(("as a decimal string", f"{digits}.0"))
    found.append(("after an underscore", f"card_{digits}"))
    found.append(("after another number", f"2026 {grouped(digits, ' ')}"))
    return found


@pytest.mark.parametrize(("network", "prefix", "length"), NETWORKS)
def test_every_network_in_every_separator_and_digit_form_is_a_pan(network: str, prefix: str, length: int) -> None:
    digits = pan(prefix, length, random.Random(f"{prefix}-{length}"))
    assert is_card_number(digits)
    missed = [(label, text) for label, text in forms(digits) if not looks_like_pan(text)]
    assert missed == []


@pytest.mark.parametrize(("network", "prefix", "length"), NETWORKS)
def test_pans_sent_as_json_numbers_are_pans(network: str, prefix: str, length: int) -> None:
    digits = pan(prefix, length, random.Random(length))
    assert number_is_pan(int(digits)), network
    if int(digits) < 2**53:  # a float holds it exactly
        assert number_is_pan(float(digits)), network
    assert find_pan({"nested": [{"n": int(digits)}]}, "data") == "data.nested[0].n"
    assert find_pan({digits: "as a key"}, "data") == f"data.{digits}"


@pytest.mark.parametrize(("network", "prefix", "length"), NETWORKS)
def test_pans_sent_as_json_numbers_with_a_fraction_are_pans(network: str, prefix: str, length: int) -> None:
    """The double a fraction is read into is not the digits sent (``4079722471297025.9`` is read
    as ``…026.0``, whose check digit fails): the digits sent are what counts."""
    digits = pan(prefix, length, random.Random(f"fraction-{prefix}-{length}"))
    for text in (f"{digits}.0", f"{digits}.1", f"{digits}.5", f"{digits}.9", f"{digits}.99999", f"-{digits}.9"):
        value = msgspec.json.decode(text.encode())
        assert isinstance(value, float)
        assert number_is_pan(value), (network, text, value)
        assert find_pan({"note": value}, "data") == "data.note"
    exponent = msgspec.json.decode(f"{digits[0]}.{digits[1:]}9e{length - 1}".encode())
    assert number_is_pan(exponent), (network, exponent)


@pytest.mark.parametrize("amount", ["378282246310005.99999", "378282246310005.0", "4079722471297025.9"])
def test_a_card_number_sent_as_a_float_amount_is_refused(amount: str) -> None:
    """An amount is made exact from the double it was read into, whose digits are no longer
    those sent (``378282246310005.99999`` became ``378282246310006.00``): checked before."""
    body = json.dumps([event("transfer.initiated", amount=0, currency="USD")]).replace(
        '"amount": 0', f'"amount": {amount}'
    )
    batch = decode_batch(body.encode(), ndjson=False, now=time.time(), max_events=10)
    assert batch.events == []
    assert [(e.field, e.message) for e in batch.rejected[0].errors] == [
        ("data.amount", "looks like a card number (PAN); send a token")
    ]


def test_fractions_of_card_number_size_beside_no_card_number_are_not_pans() -> None:
    # a millisecond timestamp with a fraction: neither it nor its neighbours pass the check digit
    for value in (1733500000000.5, 1000000000000.5, 1234567890123.25):
        assert not any(is_card_number(str(n)) for n in range(int(value) - 1, int(value) + 2))
        assert not number_is_pan(value)
    assert not number_is_pan(999999999999.9)  # 12 digits: no card number is that short
    # a nanosecond timestamp as a float: its units are gone, but no network's prefix begins 17
    for value in (1.7e18, 1733500000000000000.0, 1.0e18):
        assert not number_is_pan(value)


def test_the_issue_examples_are_pans() -> None:
    assert number_is_pan(4111111111111111.0)
    assert looks_like_pan("2200 0000 0000 0004")  # Mir, 2200-2204
    assert looks_like_pan("\uff14" + "\uff11" * 15)  # full-width 4111111111111111


@pytest.mark.parametrize(
    "text", ["card4111111111111111", "x5500000000000004", "pan4111111111111111xyz", "4111111111111111visa"]
)
def test_a_card_number_glued_to_a_word_is_still_a_pan(text: str) -> None:
    assert looks_like_pan(text)


def test_the_uuid_of_the_issue_is_not_a_pan() -> None:
    assert not looks_like_pan("d5523376-e683-40b0-b630-172501440767")


@pytest.mark.parametrize(
    "text",
    [
        "d5523376-e683-40b0-b630-172501440767",  # "630-172501440767" is no card grouping
        "d55233764111111111111111e6830000",  # a 32-digit hex id (MD5, a UUID without dashes)
        "urn:uuid:d5523376-e683-40b0-b630-172501440767",
        "{D5523376-E683-40B0-B630-172501440767}",
        "sha1=0x4111111111111111aaaa4111111111111111aaaa",  # 40 hex characters
        "4111 11 11 1111 1111",  # not a card grouping
        "411 111 111 111 1111",
        "41111111111111110",  # 17 digits: no Visa length
        "1764501234567",  # a Unix time in milliseconds
        "1764501234567890",  # ... in microseconds
        "2026-11-30T10:00:00.123456Z",
        "192.168.100.200",
        "+44 7700 900123",
        "order 20261128101500123",
        "4111111111111112",  # fails Luhn
        "tok_4f2a9c",
        "411111******1111",  # truncated as PCI DSS allows: first six, last four
        "411111*****1111",
        "4111 11** **** 1111",
        "4111-11XX-XXXX-1111",
        "+49 (0)151 23456789",
        "1,234,567,890,123.45",
    ],
)
def test_identifiers_and_other_numbers_are_not_pans(text: str) -> None:
    assert not looks_like_pan(text)


def random_uuid4s(count: int, seed: int) -> list[str]:
    """``count`` random version-4 UUIDs, made faster than ``uuid.uuid4()`` would."""
    rng = random.Random(seed)
    fixed = (0xF << 76) | (0x3 << 62)  # the version nibble and the variant bits
    made = []
    for _ in range(count):
        h = f"{(rng.getrandbits(128) & ~fixed) | (0x4 << 76) | (0x2 << 62):032x}"
        made.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return made


def test_a_million_random_uuids_are_never_taken_for_card_numbers() -> None:
    uuids = random_uuid4s(1_000_000, seed=18)
    assert all(uuid.UUID(u).version == 4 for u in uuids[:100])
    started = time.monotonic()
    assert [u for u in uuids if looks_like_pan(u)] == []
    assert time.monotonic() - started < 60  # a few seconds; bounded so that a slow regression shows


def test_uuid_case_and_braces_do_not_matter() -> None:
    for u in random_uuid4s(20_000, seed=7):
        assert not looks_like_pan(u.upper())
        assert not looks_like_pan("{" + u + "}")
        assert not looks_like_pan(u.replace("-", ""))


# -- review of issue 15: bypasses closed, false positives removed, linear time ------------------


@pytest.mark.parametrize(
    "text",
    [
        "Visa4111 1111 1111 1111",  # a label glued to the first group of a grouped number
        "4111 1111 1111 1111exp",  # ... to the last one
        "card:5500-0000-0000-0004/exp",
        "Amex378282246310005x",
        "Mir2200 0000 0000 0004",
    ],
)
def test_a_label_glued_to_a_grouped_card_number_does_not_hide_it(text: str) -> None:
    assert looks_like_pan(text)


@pytest.mark.parametrize("text", ["04111111111111111", "004111111111111111", "0000005500000000000004"])
def test_leading_zeros_do_not_hide_a_card_number(text: str) -> None:
    assert looks_like_pan(text)


@pytest.mark.parametrize(
    "text",
    [
        "4111\u03011111 1111 1111",  # a combining acute accent
        "".join(d + "\ufe0f\u20e3" for d in "4111111111111111"),  # keycaps: variation selector + enclosing keycap
        "4111\u20dd1111\u20dd1111\u20dd1111",  # an enclosing circle (Me)
        "4111\u1ab01111\u1ab01111\u1ab01111",  # a combining mark of a later Unicode block (Mn)
        "4111\u200d1111\u2060\u2060\u2060\u2060\u2060\u20601111\U000e00201111",  # format characters (Cf)
        "4111" + "\u0308" * 8 + "1111 1111 1111",  # a long run of marks counts as one separator
        "41\u030311111111111111",
    ],
)
def test_combining_marks_and_format_characters_anywhere_do_not_hide_a_card_number(text: str) -> None:
    assert looks_like_pan(text)


def test_a_json_float_with_a_fraction_is_checked_too() -> None:
    assert number_is_pan(4111111111111111.5)
    assert number_is_pan(-4111111111111111.25)
    assert not number_is_pan(4111111111111112.5)
    assert find_pan({"card": 4111111111111111.5}, "data") == "data.card"


def test_0x_prefixed_hex_hashes_are_not_pans() -> None:
    rng = random.Random(15)
    hashes = [f"0x{rng.getrandbits(256):064x}" for _ in range(100_000)]
    hashes += [h.upper().replace("0X", "0x") for h in hashes[:10_000]]
    assert [h for h in hashes if looks_like_pan(h)] == []


def e164_numbers(count: int, seed: int) -> list[str]:
    """Random mobile and fixed numbers of several countries, written as people and systems do."""
    rng = random.Random(seed)

    def digits(n: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(n))

    plans = [
        lambda: ("49", "15" + rng.choice("0123579") + digits(rng.choice((7, 8)))),  # German mobiles
        lambda: ("62", "8" + rng.choice("123578") + digits(rng.choice((8, 9, 10, 11)))),  # Indonesian mobiles
        lambda: ("44", "7" + digits(9)),  # UK mobiles
        lambda: ("1", rng.choice("23456789") + digits(9)),  # North America
    ]
    made = []
    for i in range(count):
        country, national = rng.choice(plans)()
        assert len(country + national) <= 15
        spaced = " ".join(national[k : k + 4] for k in range(0, len(national), 4))
        made.append(
            [
                f"+{country}{national}",
                f"+{country} {national}",
                f"+{country} {spaced}",
                f"+{country}-{national}",
                f"tel:+{country}{national}",
                f"00{country}{national}",
            ][i % 6]
        )
    return made


def test_phone_numbers_in_e164_are_not_pans() -> None:
    assert not looks_like_pan("+4915123456789")  # a 13-digit Visa, read naively
    numbers = e164_numbers(100_000, seed=3)
    assert [n for n in numbers if looks_like_pan(n)] == []


def test_a_card_number_after_a_plus_is_still_a_pan() -> None:
    assert looks_like_pan("+4111111111111111")
    assert looks_like_pan("+4111 1111 1111 1111")


CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def random_ids(count: int, seed: int) -> dict[str, list[str]]:
    """ULIDs, KSUIDs, sha1 and sha256 hex digests, and base64 tokens (standard and URL-safe)."""
    rng = random.Random(seed)
    return {
        "ulid": [rng.choice("01234567") + "".join(rng.choices(CROCKFORD, k=25)) for _ in range(count)],
        "ksuid": ["".join(rng.choices(BASE62, k=27)) for _ in range(count)],
        "sha1": [f"{rng.getrandbits(160):040x}" for _ in range(count)],
        "sha256": [f"{rng.getrandbits(256):064x}" for _ in range(count)],
        "base64": [base64.b64encode(rng.randbytes(32)).decode() for _ in range(count)],
        "base64url": [base64.urlsafe_b64encode(rng.randbytes(24)).decode() for _ in range(count)],
    }


def test_ulids_ksuids_hashes_and_base64_tokens_are_not_pans() -> None:
    found = {kind: [i for i in ids if looks_like_pan(i)] for kind, ids in random_ids(100_000, seed=20).items()}
    assert found == {kind: [] for kind in found}


ADVERSARIAL = {  # 64 KB each: made to make a careless detector quadratic
    "digit runs glued in one hex token": "1111111111111a" * 4681,
    "... in one non-hex token": "1111111111111g" * 4681,
    "... with a non-ASCII tail": "1111111111111a" * 4680 + "\u00e9",
    "... with zero-width characters": "1111111111111\u200b" * 4681,
    "separators only between digits": "1 " * 32_768,
    "separator runs": "1 -- " * 13_107,
    "card-like groups": "4111 " * 13_107,
    "almost a chain": "111111111111a" * 5041,
    "long digit run": "4" * 65_536,
    "full-width digits and marks": "\uff11\u0301" * 13_107,
    "plus signs": "+1" * 32_768,
    "zeros": "0" * 65_535 + "4",
    "a ligature NFKC expands 18 times": "\ufdfa" * 21_334,
    "... with a digit": "\ufdfa" * 21_333 + "4",
    "hex hash look-alikes": ("0x" + "a" * 64 + " ") * 970,
}


@pytest.mark.parametrize("shape", sorted(ADVERSARIAL))
@pytest.mark.serial  # a ratio of CPU times: a busy core beside it costs some in caches
def test_the_detector_is_linear_on_adversarial_text(shape: str) -> None:
    text = ADVERSARIAL[shape]
    assert len(text.encode()) >= 64_000

    def scan(text: str) -> None:
        looks_like_pan(text)
        find_pan({"key": text, text: 1})

    assert_linear(scan, text, at_most_s=1.0)  # 20 s of CPU before the fix; 0.4 s at most here
