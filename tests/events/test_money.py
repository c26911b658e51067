"""Amounts read without Decimal when already canonical: the same text, or the same error, as
the exact reading."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.events.money import MoneyError, canonical_amount, to_decimal

CURRENCIES = ["EUR", "JPY", "KWD", "CLF", "XXX"]  # 2, 0, 3 and 4 decimals, and an unknown code


def exact(value: object, currency: str, signed: bool) -> str:
    try:
        return str(to_decimal(value, currency, signed=signed))  # type: ignore[arg-type]
    except MoneyError as exc:
        return f"error: {exc.field}: {exc}"


def fast(value: object, currency: str, signed: bool) -> str:
    try:
        return canonical_amount(value, currency, signed=signed)  # type: ignore[arg-type]
    except MoneyError as exc:
        return f"error: {exc.field}: {exc}"


amount_texts = st.one_of(
    st.from_regex(r"-?(0|[0-9]{1,17})(\.[0-9]{0,5})?", fullmatch=True),
    st.text(alphabet="0123456789.-+e _٣", max_size=20),
)


@settings(max_examples=500, deadline=None)
@given(amount_texts, st.sampled_from(CURRENCIES), st.booleans())
def test_a_text_amount_reads_as_the_exact_reading_does(value: str, currency: str, signed: bool) -> None:
    assert fast(value, currency, signed) == exact(value, currency, signed)


@settings(deadline=None)
@given(st.one_of(st.integers(), st.floats(), st.booleans(), st.none()), st.sampled_from(CURRENCIES), st.booleans())
def test_a_number_amount_reads_as_the_exact_reading_does(value: object, currency: str, signed: bool) -> None:
    assert fast(value, currency, signed) == exact(value, currency, signed)


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        ("6.84", "EUR", "6.84"),
        ("0.00", "EUR", "0.00"),
        ("1500", "EUR", "1500.00"),
        ("007.5", "EUR", "7.50"),
        ("1500", "JPY", "1500"),
        ("1.250", "KWD", "1.250"),
        ("999999999999999.99", "EUR", "999999999999999.99"),
    ],
)
def test_canonical_and_other_amounts(value: str, currency: str, expected: str) -> None:
    assert canonical_amount(value, currency) == expected


def test_sixteen_major_digits_are_too_large_on_either_path() -> None:
    with pytest.raises(MoneyError, match="too large"):
        canonical_amount("1000000000000000.00", "EUR")
