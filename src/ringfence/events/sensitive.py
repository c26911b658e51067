"""Sensitive values in events: card numbers (PANs) rejected, account numbers masked, numbers
bounded, and nothing of a rejected value echoed back.

Producers must send card tokens, never PANs; a PAN-like value anywhere in an event (a
string, a number, an object key) rejects the event before anything is written. IBANs are
masked before anything is stored. Called by :mod:`ringfence.events.decode` for each event.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import TYPE_CHECKING, Any

from ringfence.errors import FieldError
from ringfence.events import pan
from ringfence.events.controls import data_fault
from ringfence.events.iban import IBAN_LENGTHS, iban_spans, mask_account, mask_ibans
from ringfence.events.identifiers import HASH_LENGTHS
from ringfence.events.pan import MIN_PAN_DIGITS, looks_like_pan, luhn_valid, number_is_pan

if TYPE_CHECKING:
    from ringfence_native import PlainCheck

__all__ = [
    "MAX_DATA_DEPTH",
    "PAN_MESSAGE",
    "clean",
    "echo",
    "find_pan",
    "looks_like_pan",
    "luhn_valid",
    "mask_account",
    "mask_ibans",
    "mask_strings",
    "plain",
    "plain_check",
    "redact",
    "scan",
]

PAN_MESSAGE = "looks like a card number (PAN); send a token"
ESCAPED_IBAN_MESSAGE = (
    "holds an account number (IBAN) spelled with escapes (%20, &#32;...): send it as plain text, "
    "which is masked, or masked"
)
SAME_MASKED_KEY = "another key of this object masks to the same text (one account number written twice); send one"
MAX_DATA_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
REDACTED = "<redacted: looks like a card number>"


def clean(text: str) -> tuple[str, str | None]:
    """``text`` with its IBANs masked, and what makes it unstorable, if anything: a card number,
    or an IBAN only its escapes spell (``%20`` between its groups: masking the text as sent
    cannot reach it, and the text read decoded is not what was sent)."""
    if len(text) < MIN_PAN_DIGITS and text.isascii():  # most values: too short for a PAN or an IBAN
        return text, None
    masked = mask_ibans(text)
    if looks_like_pan(masked):
        return masked, PAN_MESSAGE
    if any(iban_spans(form) for form in pan.escapes_read(masked) if form is not None):
        return masked, ESCAPED_IBAN_MESSAGE
    return masked, None


def scan(value: Any, path: str, errors: list[FieldError], depth: int = 0, *, keys: bool = True) -> Any:
    """``value`` with IBANs masked in every string and object key; appends to ``errors`` each
    PAN, integer beyond 64 bits, non-finite float, nesting deeper than MAX_DATA_DEPTH, NUL or
    lone surrogate in a string or key, and key that masks to the same text as another.

    ``keys=False`` skips object keys: a built-in type's struct already allowed only its own.
    Validation skips this for values :func:`plain` finds plain: a check added here must be
    reflected there (``native/src/plain.rs``) and in its differential test.
    """
    if isinstance(value, str):
        fault = data_fault(value)
        if fault is not None:
            errors.append(FieldError(path, fault))
        masked, problem = clean(value)
        if problem is not None:
            errors.append(FieldError(path, problem))
        return masked
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            errors.append(FieldError(path, "integer out of range: must be within -2**63 .. 2**63-1"))
        elif number_is_pan(value):
            errors.append(FieldError(path, PAN_MESSAGE))
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            errors.append(FieldError(path, "number must be finite"))
        elif number_is_pan(value):
            errors.append(FieldError(path, PAN_MESSAGE))
        return value
    if isinstance(value, dict | list) and depth >= MAX_DATA_DEPTH:
        errors.append(FieldError(path, f"nested deeper than {MAX_DATA_DEPTH} levels"))
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name, problem = clean(str(key)) if keys else (key, None)
            sub = f"{path}.{name}" if path else name
            fault = data_fault(name) if keys else None
            if fault is not None:
                errors.append(FieldError(sub, f"object key {fault}"))
            if problem is not None:
                errors.append(FieldError(sub, problem))
            if name in out:  # a value must never be lost silently
                errors.append(FieldError(sub, SAME_MASKED_KEY))
            out[name] = scan(item, sub, errors, depth + 1, keys=keys)
        return out
    if isinstance(value, list):
        return [scan(item, f"{path}[{i}]", errors, depth + 1, keys=keys) for i, item in enumerate(value)]
    return value


@functools.cache
def plain_check() -> PlainCheck | None:
    """The compiled core's quick look, built once; None without the compiled core."""
    try:
        from ringfence_native import PlainCheck
    except ImportError:
        return None
    groupings = [list(g) for g in sorted(pan.CARD_GROUPINGS)]
    digits = (pan.MIN_PAN_DIGITS, pan.MAX_PAN_DIGITS)
    hashes = sorted(HASH_LENGTHS)
    return PlainCheck(
        groupings, digits, pan.PAN_NUMBERS[0], pan.MAX_SEPARATOR_RUN, IBAN_LENGTHS, MAX_DATA_DEPTH, hashes
    )


def plain(value: Any) -> bool:
    """True when :func:`scan` provably finds nothing in ``value`` and leaves it as it is, so
    it need not run: the compiled core's quick look (printable ASCII strings with no digit
    chain a card number fits in and no IBAN's start, numbers under 10**12, shallow nesting).
    False whenever it cannot tell, and always without the compiled core."""
    check = plain_check()
    return check is not None and check.value(value)


def find_pan(value: Any, path: str = "") -> str | None:
    """The path of the first PAN-like value (or key) inside ``value``, or None."""
    errors: list[FieldError] = []
    scan(value, path, errors)
    return next((e.field for e in errors if e.message == PAN_MESSAGE), None)


def mask_strings(value: Any) -> Any:
    """``value`` with IBANs masked in every string and object key it contains."""
    return scan(value, "", [])


def redact(text: str) -> str:
    """``text`` fit to be echoed (in an error, a log line): its digits starred out if it holds a
    card number, its IBANs masked."""
    if looks_like_pan(text):
        return "".join("*" if ch.isnumeric() else ch for ch in text)
    return mask_ibans(text)


def echo(value: str | None) -> str | None:
    """A producer's identifier as it may be echoed back: None if it holds a card number."""
    if value is None or looks_like_pan(value):
        return None
    return mask_ibans(value)


def without_card_number(text: str) -> str:
    """``text`` for a log line: its digits starred out if it holds a card number."""
    return redact(text) if looks_like_pan(text) else text


class NoCardNumbers(logging.Filter):
    """A handler's filter: a log record whose message or traceback holds a card number has its
    digits starred out (a request's path, a library's exception quoting a value may carry one).
    For handlers Ringfence does not format itself (Lambda's, a worker process's stderr)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if (cleaned := without_card_number(message)) is not message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = without_card_number(record.exc_text)
        return True


def redact_logs(logger: logging.Logger | None = None) -> None:
    """Put :class:`NoCardNumbers` on every handler of ``logger`` (the root's by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, NoCardNumbers) for f in handler.filters):
            handler.addFilter(NoCardNumbers())
