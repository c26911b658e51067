"""The one strict parser of request numbers and times: ASCII digits only, bounded, no guessing."""

from __future__ import annotations

import pytest

from ringfence.api.params import parse_int, parse_time, printable


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("007", 7),
        (str(2**62), 2**62),
        (str(2**62 + 1), None),  # over the range
        ("9" * 19, None),
        ("9" * 20, None),  # longer than any int64: never handed to int()
        ("9" * 5000, None),  # int() itself refuses more than 4300 digits
        ("\u00b2", None),  # "²".isdigit() is True
        ("\u0661\u0662", None),  # Arabic-Indic digits: int() would take them
        ("\uff11\uff12", None),  # full-width digits
        ("+5", None),
        ("-5", None),
        (" 5", None),
        ("5 ", None),
        ("5\n", None),  # "$" in a regex would let this through; fullmatch does not
        ("1_000", None),
        ("0x10", None),
        ("1e3", None),
        ("5.0", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_int_takes_only_ascii_digits_in_range(text: str | None, expected: int | None) -> None:
    assert parse_int(text, 0, 2**62) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T00:00:00Z", 1767225600.0),
        ("2026-01-01t00:00:00z", 1767225600.0),
        ("2026-01-01T01:00:00.5+01:00", 1767225600.5),
        ("2026-01-01T00:00:00", None),  # no offset
        ("2026-01-01T00:00:00+0000", None),  # not RFC 3339
        ("2026-W01-1T00:00:00Z", None),  # ISO week date: fromisoformat takes it, RFC 3339 does not
        ("20260101T000000Z", None),
        ("\uff12\uff10\uff12\uff16-01-01T00:00:00Z", None),
        ("2026-13-01T00:00:00Z", None),
    ],
)
def test_parse_time_takes_only_rfc3339_with_an_offset(text: str, expected: float | None) -> None:
    assert parse_time(text) == expected


def test_printable_refuses_control_characters() -> None:
    assert printable("cus_42 é ✓")
    assert not printable("cus\x00")
    assert not printable("a\r\nb")
