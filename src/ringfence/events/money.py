"""Money held exactly: decimal amounts checked against ISO 4217 minor units."""

from __future__ import annotations

import re
from decimal import Decimal, DecimalException, InvalidOperation

from ringfence.events.pan import number_is_pan

# Active ISO 4217 codes whose minor unit is not 2 digits.
_EXPONENT_EXCEPTIONS: dict[str, int] = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    "CLF": 4,
    "UYW": 4,
}
_TWO_DIGIT = [
    "AED",
    "AFN",
    "ALL",
    "AMD",
    "ANG",
    "AOA",
    "ARS",
    "AUD",
    "AWG",
    "AZN",
    "BAM",
    "BBD",
    "BDT",
    "BGN",
    "BMD",
    "BND",
    "BOB",
    "BOV",
    "BRL",
    "BSD",
    "BTN",
    "BWP",
    "BYN",
    "BZD",
    "CAD",
    "CDF",
    "CHE",
    "CHF",
    "CHW",
    "CNY",
    "COP",
    "COU",
    "CRC",
    "CUP",
    "CVE",
    "CZK",
    "DKK",
    "DOP",
    "DZD",
    "EGP",
    "ERN",
    "ETB",
    "EUR",
    "FJD",
    "FKP",
    "GBP",
    "GEL",
    "GHS",
    "GIP",
    "GMD",
    "GTQ",
    "GYD",
    "HKD",
    "HNL",
    "HTG",
    "HUF",
    "IDR",
    "ILS",
    "INR",
    "IRR",
    "JMD",
    "KES",
    "KGS",
    "KHR",
    "KPW",
    "KYD",
    "KZT",
    "LAK",
    "LBP",
    "LKR",
    "LRD",
    "LSL",
    "MAD",
    "MDL",
    "MGA",
    "MKD",
    "MMK",
    "MNT",
    "MOP",
    "MRU",
    "MUR",
    "MVR",
    "MWK",
    "MXN",
    "MXV",
    "MYR",
    "MZN",
    "NAD",
    "NGN",
    "NIO",
    "NOK",
    "NPR",
    "NZD",
    "PAB",
    "PEN",
    "PGK",
    "PHP",
    "PKR",
    "PLN",
    "QAR",
    "RON",
    "RSD",
    "RUB",
    "SAR",
    "SBD",
    "SCR",
    "SDG",
    "SEK",
    "SGD",
    "SHP",
    "SLE",
    "SOS",
    "SRD",
    "SSP",
    "STN",
    "SVC",
    "SYP",
    "SZL",
    "THB",
    "TJS",
    "TMT",
    "TOP",
    "TRY",
    "TTD",
    "TWD",
    "TZS",
    "UAH",
    "USD",
    "USN",
    "UYU",
    "UZS",
    "VED",
    "VES",
    "WST",
    "XCD",
    "XCG",
    "YER",
    "ZAR",
    "ZMW",
    "ZWG",
]
CURRENCY_EXPONENTS: dict[str, int] = {**dict.fromkeys(_TWO_DIGIT, 2), **_EXPONENT_EXCEPTIONS}
MAX_MAJOR_DIGITS = 15
MAX_MAJOR_UNITS = Decimal(10) ** MAX_MAJOR_DIGITS
MAX_AMOUNT_CHARS = 64  # longer strings are no amount (and Decimal would parse them slowly)


# Python's Decimal also reads "1_000", "+5", " 5 ", "1e3", "NaN" and non-ASCII digits: an amount
# is plain ASCII digits, so that what the bank sent and what Ringfence compares are the same text
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def _canonical(exponent: int) -> re.Pattern[str]:
    decimals = rf"\.[0-9]{{{exponent}}}" if exponent else ""
    return re.compile(rf"(?:0|[1-9][0-9]{{0,{MAX_MAJOR_DIGITS - 1}}}){decimals}")


# an amount already canonical: digits with no leading zero (or a lone 0), then exactly the
# currency's decimals; most producers send this, and it is read without Decimal
_CANONICAL = {exponent: _canonical(exponent) for exponent in set(CURRENCY_EXPONENTS.values())}


class MoneyError(ValueError):
    """An amount or currency is not valid; the message says why (without echoing the value),
    ``field`` which of the two is at fault."""

    def __init__(self, message: str, field: str = "amount") -> None:
        self.field = field
        super().__init__(message)


def to_decimal(value: int | float | str, currency: str, *, signed: bool = False) -> Decimal:
    """Parse ``value`` as an exact amount of ``currency``.

    Raises MoneyError if the currency is unknown, the value is not a finite decimal, has
    more decimals than the currency's minor unit, is negative (unless ``signed``) or is
    implausibly large.
    """
    exponent = CURRENCY_EXPONENTS.get(currency)
    if exponent is None:
        raise MoneyError("unknown ISO 4217 currency", "currency")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MoneyError("expected a number or decimal string")
    if isinstance(value, str) and (len(value) > MAX_AMOUNT_CHARS or _DECIMAL.fullmatch(value) is None):
        raise MoneyError("not a decimal number: write digits, an optional '-' and '.' (e.g. \"1250.00\")")
    if isinstance(value, float) and number_is_pan(value):  # before repr() rounds its digits away
        raise MoneyError("looks like a card number (PAN); send a token")
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError):
        raise MoneyError("not a decimal number") from None
    if not amount.is_finite():
        raise MoneyError("must be finite")
    # adjusted() reads the magnitude without arithmetic, which could overflow the context
    if amount != 0 and amount.adjusted() >= MAX_MAJOR_DIGITS:
        raise MoneyError("is too large")
    if not signed and amount < 0:
        raise MoneyError("must not be negative")
    try:
        unit = Decimal(1).scaleb(-exponent)
        exp = amount.as_tuple().exponent
        if isinstance(exp, int) and -exp > exponent and amount != amount.quantize(unit):
            raise MoneyError(f"{currency} has {exponent} decimal places, got {-exp}")
        return amount.quantize(unit)
    except DecimalException:
        raise MoneyError("not a decimal number") from None


def canonical_amount(value: int | float | str, currency: str, *, signed: bool = False) -> str:
    """:func:`to_decimal`'s amount as text (raising as it does), read without Decimal when
    it is already canonical."""
    exponent = CURRENCY_EXPONENTS.get(currency)
    if isinstance(value, str) and exponent is not None:
        pattern = _CANONICAL.get(exponent)
        if pattern is not None and pattern.fullmatch(value) is not None:
            return value
    return str(to_decimal(value, currency, signed=signed))
