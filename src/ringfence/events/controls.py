"""Characters a producer's string may not hold, because a store or encoder downstream refuses them.

PostgreSQL (the Kafka runtime's store) rejects NUL in ``text`` and ``jsonb``, and no UTF-8
encoder writes a lone surrogate: an event holding either would be accepted, then halt the
dispatcher on every restart. Envelope strings (ids, source, type) hold no control character
at all, nor any invisible format character (bidi overrides, zero-width spaces: an id shown to
an analyst must read as what it is); data strings and keys may hold tab, CR and LF, never NUL
nor a lone surrogate.
ASCII strings, nearly all of them, are checked by one ``in`` or one regex scan.
"""

from __future__ import annotations

import re
import unicodedata

_ENVELOPE_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # Cc and Cs
_DATA_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")
_UNPRINTABLE = _ENVELOPE_FORBIDDEN


def _describe(ch: str) -> str:
    kind = "a lone surrogate" if "\ud800" <= ch <= "\udfff" else "a control character"
    return f"holds {kind} (U+{ord(ch):04X})"


def envelope_fault(value: str) -> str | None:
    """Why ``value`` may not be an envelope string (an id, source or type), or None."""
    found = _ENVELOPE_FORBIDDEN.search(value)
    if found is not None:
        return _describe(found.group())
    if not value.isascii():  # ids are shown to people: a bidi override shows "\u202e24_suc" as "cus_42"
        for ch in value:
            kind = unicodedata.category(ch)
            if kind == "Cf":
                return f"holds an invisible format character (U+{ord(ch):04X})"
            if kind in ("Zl", "Zp"):
                return f"holds a line break (U+{ord(ch):04X})"
    return None


def data_fault(value: str) -> str | None:
    """Why ``value`` may not be a string or an object key in ``data``, or None."""
    if value.isascii():
        return _describe("\x00") if "\x00" in value else None
    found = _DATA_FORBIDDEN.search(value)
    return None if found is None else _describe(found.group())


def printable(text: str) -> str:
    """``text`` fit for an error message or a log line: control characters and lone
    surrogates (which no encoder writes) replaced by U+FFFD."""
    return _UNPRINTABLE.sub("\ufffd", text)
