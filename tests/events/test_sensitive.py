"""Card numbers are recognised by shape and checksum; account numbers are masked."""

from __future__ import annotations

import pytest

from ringfence.events.sensitive import (
    find_pan,
    looks_like_pan,
    luhn_valid,
    mask_account,
    mask_ibans,
)


@pytest.mark.parametrize(
    ("text", "is_pan"),
    [
        ("4111111111111111", True),
        ("4111-1111-1111-1111", True),
        ("card 5500 0000 0000 0004 used", True),
        ("378282246310005", True),  # Amex, 15 digits
        ("4111111111111112", False),  # fails Luhn
        ("1234567890123452", False),  # passes Luhn but no card network starts with 1
        ("41111111111", False),  # too short
        ("order 20261128101500123", False),
        ("tok_4f2a9c", False),
    ],
)
def test_pan_detection(text: str, is_pan: bool) -> None:
    assert looks_like_pan(text) is is_pan


def test_luhn() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


def test_find_pan_reports_the_path_of_nested_values() -> None:
    assert find_pan({"a": {"b": ["x", "4111111111111111"]}}, "data") == "data.a.b[1]"
    assert find_pan({"n": 4111111111111111}, "data") == "data.n"
    assert find_pan({"ok": "fine", "amount": 1234}, "data") is None


def test_masking_keeps_country_and_last_four() -> None:
    assert mask_account("GB82 WEST 1234 5698 7654 32") == "GB****************5432"
    assert mask_account("1234") == "****"
    assert mask_ibans("pay FR1420041010050500013M02606 today") == "pay FR*********************2606 today"
