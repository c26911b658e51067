"""Card numbers (PANs) and account numbers: detection and masking.

Producers must send card tokens, never PANs; a PAN-like value anywhere in an event rejects
the event. IBANs and payee account numbers are masked before anything is stored.
"""

from __future__ import annotations

import re
from typing import Any

# 13-19 digits, optionally grouped by single spaces or dashes, not inside a longer digit run.
_PAN_CANDIDATE = re.compile(r"(?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9])")
_IBAN = re.compile(r"\b[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]){11,30}\b")


def _network_shape(digits: str) -> bool:
    """True if the issuer prefix and length match a card network (Visa, Mastercard,
    Amex, Diners, JCB, Discover, UnionPay, Maestro); keeps order numbers and timestamps out."""
    n = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)
    if two in (34, 37):
        return n == 15
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16
    if two in (30, 36, 38, 39):
        return 14 <= n <= 19
    if 3528 <= four <= 3589:
        return 16 <= n <= 19
    if two == 50 or 56 <= two <= 69:
        return 12 <= n <= 19
    return False


def luhn_valid(digits: str) -> bool:
    """True if ``digits`` passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def looks_like_pan(text: str) -> bool:
    """True if ``text`` contains a digit run that is a plausible card number."""
    for match in _PAN_CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and _network_shape(digits) and luhn_valid(digits):
            return True
    return False


def find_pan(value: Any, path: str = "") -> str | None:
    """The dotted path of the first PAN-like value inside ``value``, or None."""
    if isinstance(value, str):
        return path if len(value) >= 13 and looks_like_pan(value) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return path if value >= 10**12 and looks_like_pan(str(value)) else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if (hit := find_pan(key, sub)) or (hit := find_pan(item, sub)):
                return hit
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if hit := find_pan(item, f"{path}[{i}]"):
                return hit
    return None


def mask_account(value: str) -> str:
    """Keep the first two (country) and last four characters: ``GB**************1234``."""
    compact = value.replace(" ", "")
    if len(compact) <= 6:
        return "*" * len(compact)
    return compact[:2] + "*" * (len(compact) - 6) + compact[-4:]


def mask_ibans(text: str) -> str:
    """Mask every IBAN-shaped substring of ``text``."""
    return _IBAN.sub(lambda m: mask_account(m.group()), text) if len(text) >= 15 else text


def mask_strings(value: Any) -> Any:
    """``value`` with IBANs masked in every string it contains."""
    if isinstance(value, str):
        return mask_ibans(value)
    if isinstance(value, dict):
        return {k: mask_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_strings(v) for v in value]
    return value
