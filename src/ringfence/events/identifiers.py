"""Identifiers by shape: canonical UUIDs (any case; in braces or after ``urn:uuid:`` too, since
those are separators) and hex hashes of the standard lengths (MD5 to SHA-512, ``0x`` or not),
bounded by characters that are no letter nor digit.

The card-number and IBAN scans take them out: their hex digits spell a card number or an
account number now and then by chance (about one random UUID in 760 holds a valid IBAN's
shape and check digits), and an id is neither. Without this, a producer's UUID event id would
now and then be stored masked.
"""

from __future__ import annotations

import re

HASH_LENGTHS = frozenset({32, 40, 56, 64, 96, 128})
IDENTIFIER = re.compile(
    r"(?<![0-9A-Za-z])(?:"
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"|(?:0[xX])?(?P<hex>[0-9A-Fa-f]{32,128}+)"
    r")(?![0-9A-Za-z])"
)


def is_identifier(match: re.Match[str]) -> bool:
    """True if ``match`` (of :data:`IDENTIFIER`) is a UUID or a hash of a standard length."""
    hex_digits = match.group("hex")
    return hex_digits is None or len(hex_digits) in HASH_LENGTHS


def identifier_spans(text: str) -> list[tuple[int, int]]:
    """Where ``text`` holds identifiers: (start, end) of each."""
    return [match.span() for match in IDENTIFIER.finditer(text) if is_identifier(match)]
