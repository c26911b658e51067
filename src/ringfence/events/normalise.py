"""Canonical ``data``: exact money, checked IP addresses, masked account numbers.

Runs on built-in types' data (already typed by their structs) and on custom types' free-form
data, where nothing about a value's type can be trusted: each step checks the type first,
so no producer value raises here. Called by :func:`ringfence.events.decode.validate_event`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Container
from typing import Any

from ringfence.errors import FieldError
from ringfence.events.money import MoneyError, canonical_amount
from ringfence.events.sensitive import mask_account
from ringfence.events.types import CURRENCY_FIELD, IP_FIELD, MASKED_FIELDS, MONEY_FIELDS

MAX_IP_CHARS = 45
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# the dotted quad most addresses are, checked without building an address object
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


def normalise_data(data: dict[str, Any], failed: Container[str] = ()) -> list[FieldError]:
    """Canonicalise money and mask account fields of ``data`` in place; return the errors.

    ``failed`` holds the paths already reported, so one fault is not reported twice.
    """
    errors: list[FieldError] = []
    for name in MONEY_FIELDS:
        if name in data and f"data.{name}" not in failed:
            _money(data, name, failed, errors)
    for name in MASKED_FIELDS:
        if name in data and data[name] is not None:
            if isinstance(data[name], str):
                data[name] = mask_account(data[name])
            else:
                errors.append(FieldError(f"data.{name}", "expected an account number (a string)"))
    if data.get(IP_FIELD) is not None and f"data.{IP_FIELD}" not in failed:
        error = _ip_error(data[IP_FIELD])
        if error is not None:
            errors.append(FieldError(f"data.{IP_FIELD}", error))
    return errors


def _money(data: dict[str, Any], name: str, failed: Container[str], errors: list[FieldError]) -> None:
    currency = data.get(CURRENCY_FIELD)
    if not isinstance(currency, str):
        if f"data.{CURRENCY_FIELD}" not in failed:
            message = f"is required with data.{name}" if currency is None else "expected an ISO 4217 code (a string)"
            errors.append(FieldError(f"data.{CURRENCY_FIELD}", message))
        return
    try:
        data[name] = canonical_amount(data[name], currency, signed=name == "balance")
    except MoneyError as exc:
        path = f"data.{exc.field}" if exc.field == "currency" else f"data.{name}"
        if path not in failed and FieldError(path, str(exc)) not in errors:
            errors.append(FieldError(path, str(exc)))


def address_and_zone(value: object) -> tuple[str, str] | None:
    """``value`` as an IP address and its zone (after ``%``, "" if none), if it is one (as the
    IP check takes it): the address's hex and digit groups only number it, the zone is text."""
    if not isinstance(value, str) or _ip_error(value) is not None:
        return None
    address, _, zone = value.partition("%")
    return address, zone


def _ip_error(value: object) -> str | None:
    if not isinstance(value, str):
        return "expected an IP address (a string)"
    if len(value) > MAX_IP_CHARS:
        return "not an IP address"
    if _IPV4.fullmatch(value) is not None:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "not an IP address"
    return None
