"""Card numbers (PANs) in text and numbers: what counts as one, and what does not.

A PAN is 13-19 digits whose issuer prefix and length belong to a card network and which
pass the Luhn check. It counts when written as one digit run (leading zeros or not), or in
a card-like grouping (4-4-4-4, 4-6-5, 4-4-4-4-3, ...) with runs of up to five separators:
spaces (NBSP and the other Unicode spaces too), dashes, ``.`` ``/`` ``_`` ``,`` ``:`` ``|``
``+`` ``;`` ``*`` ``'`` ``~``, bullets and middle dots. Text is normalised first: NFKC
(full-width digits, superscripts), every Unicode decimal digit to its ASCII digit, and every
combining mark or format character (categories Mn, Me, Cf: zero-width spaces, soft hyphens,
accents, keycaps) read both as nothing and as a separator.

Identifiers hold digit runs by chance. A digit group glued to letters is taken out of its run
when its token (its letters and digits) is a hex token, a hash or a UUID (``b630`` of
``b630-172501440767`` is no Maestro card; ``0x`` counts as hex); glued to any other word
(``Visa4111 1111 1111 1111``, ``card4111111111111111``) it stays: a card number with a label
stuck to it is still a card number. A chain right after ``+`` of at most 15 digits, or a
run of ``00`` and at most 15 digits, is a phone number (E.164), not a card.

Every step is linear in the length of the text: one regex pass finds the digit chains, one
pass over the tokens decides which groups are glued to a hex token.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator

MIN_PAN_DIGITS, MAX_PAN_DIGITS = 13, 19
MAX_PHONE_DIGITS = 15  # E.164
MAX_SEPARATOR_RUN = 5

# Groupings in which cards are printed or typed (besides one unbroken run).
CARD_GROUPINGS = frozenset(
    {
        (4, 4, 4, 1),
        (4, 4, 4, 2),
        (4, 4, 4, 3),
        (4, 4, 4, 4),
        (4, 4, 4, 4, 1),
        (4, 4, 4, 4, 2),
        (4, 4, 4, 4, 3),
        (4, 4, 5),
        (4, 6, 4),  # Diners
        (4, 6, 5),  # American Express
        (6, 13),  # 19-digit Maestro and UnionPay
    }
)
_FIRST_GROUP_SIZES = frozenset(grouping[0] for grouping in CARD_GROUPINGS)
_MAX_GROUPS = max(map(len, CARD_GROUPINGS))

# Issuer prefix ranges (lowest, highest; same number of digits) and the PAN lengths each issues.
_ANY = tuple(range(12, 20))
_NETWORKS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("1", "1", (15,)),  # UATP
    ("2200", "2204", (16, 17, 18, 19)),  # Mir
    ("2221", "2720", (16,)),  # Mastercard 2-series
    ("300", "305", (14, 15, 16, 17, 18, 19)),  # Diners Club
    ("3095", "3095", (14, 15, 16, 17, 18, 19)),
    ("36", "36", (14, 15, 16, 17, 18, 19)),
    ("38", "39", (14, 15, 16, 17, 18, 19)),
    ("34", "34", (15,)),  # American Express
    ("37", "37", (15,)),
    ("3528", "3589", (16, 17, 18, 19)),  # JCB (and RuPay's JCB co-brands 353, 356)
    ("4", "4", (13, 16, 19)),  # Visa, Visa Electron, Elo's 4-ranges
    ("50", "50", _ANY),  # Maestro, RuPay 508, Verve 506/507, Dankort 5019
    ("51", "55", (16,)),  # Mastercard
    ("56", "69", _ANY),  # Maestro, Discover 6011/64/65, RuPay 60/65, UnionPay 62, Troy 65, Verve 650
    ("81", "82", (16, 17, 18, 19)),  # UnionPay 81, RuPay 82
    ("8600", "8600", (16,)),  # UzCard
    ("9792", "9792", (16,)),  # Troy
    ("9860", "9860", (16,)),  # Humo
)

_ASCII_SEPARATORS = "\t\n\r\f\v -./_,:|+;*'~"  # Unicode ones become a space when normalised
# Unicode separators beyond the spaces (Z*) and dashes (Pd): dots, bullets, quotes, blanks
_OTHER_SEPARATORS = frozenset(
    "\u00b7\u02b9\u02bc\u0387\u2018\u2019\u2022\u2023\u2024\u2027\u2043\u2212\u2219\u22c5\u2800\u2e31\u30fb\uff65"
)
# Hangul fillers are letters (Lo) that render as nothing
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
_INVISIBLE = "\ufdd0"  # a noncharacter marks where an invisible character was
_INVISIBLE_RUN = re.compile(f"{_INVISIBLE}+")
_SEP = f"[{re.escape(_ASCII_SEPARATORS)}]"
# 13 or more digits and separator runs, from the start of a digit run to a digit; possessive,
# and never starting inside a run, so each character is looked at a bounded number of times
_CHAIN = re.compile(rf"(?<![0-9])[0-9](?:[0-9]|{_SEP}{{1,{MAX_SEPARATOR_RUN}}}+(?=[0-9])){{12,}}+")
_SEPARATOR_RUN = re.compile(f"{_SEP}+")
_TOKEN = re.compile(r"[^\W_]+")  # letters and digits: what ``str.isalnum`` accepts
_HEX_TOKEN = re.compile(r"(?:0[xX])?[0-9A-Fa-f]+")


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


def is_card_number(digits: str) -> bool:
    """True if ``digits`` (ASCII digits only) has a card network's prefix and length and passes Luhn."""
    n = len(digits)
    if not MIN_PAN_DIGITS <= n <= MAX_PAN_DIGITS:
        return False
    for low, high, lengths in _NETWORKS:
        if n in lengths and low <= digits[: len(low)] <= high:
            return luhn_valid(digits)
    return False


@functools.lru_cache(maxsize=8192)
def _reading(code: int) -> str:
    """How the PAN search reads one character of NFKC text."""
    ch = chr(code)
    if code < 128:
        return ch
    digit = unicodedata.decimal(ch, None)
    if digit is not None:
        return str(digit)
    category = unicodedata.category(ch)
    if category in ("Mn", "Me", "Cf", "Cc", "Cs") or ch in _BLANK_LETTERS or ch == _INVISIBLE:
        return _INVISIBLE
    if category[0] == "Z" or category == "Pd" or ch in _OTHER_SEPARATORS:
        return " "
    return ch


class _Reader(dict[int, str]):
    """``str.translate`` table that reads every character with :func:`_reading`."""

    def __missing__(self, code: int) -> str:
        return _reading(code)


_READER = _Reader({code: chr(code) for code in range(128)})


def normalised_forms(text: str) -> list[str]:
    """``text`` as the PAN search reads it: ASCII digits and ASCII separators.

    Two forms when ``text`` holds invisible characters: removed, and read as one separator.
    """
    if text.isascii():
        return [text]
    text = unicodedata.normalize("NFKC", text).translate(_READER)
    if _INVISIBLE not in text:
        return [text]
    return [text.replace(_INVISIBLE, ""), _INVISIBLE_RUN.sub(" ", text)]


class _Tokens:
    """The alphanumeric tokens of a text, walked once from left to right."""

    def __init__(self, text: str) -> None:
        self._matches = _TOKEN.finditer(text)
        self._current: re.Match[str] | None = None
        self._hex = False

    def hex_at(self, position: int) -> bool:
        """True if the token holding ``position`` is a hex token; positions must not go back."""
        while self._current is None or self._current.end() <= position:
            self._current = next(self._matches)
            self._hex = _HEX_TOKEN.fullmatch(self._current.group()) is not None
        return self._hex


def _digit_groups(text: str) -> Iterator[list[str]]:
    """Runs of digit groups joined by separators, without the groups glued to a hex token
    and without phone numbers."""
    tokens = _Tokens(text)
    for match in _CHAIN.finditer(text):
        start, end = match.span()
        groups = _SEPARATOR_RUN.split(match.group())
        if start and text[start - 1] == "+" and sum(map(len, groups)) <= MAX_PHONE_DIGITS:
            continue
        glued_left = start > 0 and text[start - 1].isalnum()
        glued_right = end < len(text) and text[end].isalnum()
        if glued_left and tokens.hex_at(start):
            groups.pop(0)
        if groups and glued_right and tokens.hex_at(end - 1):
            groups.pop()
        if groups:
            yield groups


def _zero_padded_pan(run: str) -> bool:
    """True if ``run`` is a PAN behind leading zeros (``004111111111111111``), unless it is
    a phone number dialled with the international prefix 00 (``004915123456789``)."""
    if run[0] != "0" or (run.startswith("00") and len(run) <= 2 + MAX_PHONE_DIGITS):
        return False
    return is_card_number(run.lstrip("0"))


def _pan_in(groups: list[str]) -> bool:
    """True if a single run (leading zeros or not) or a card-like grouping of ``groups`` is a PAN."""
    sizes = [len(g) for g in groups]
    for i, size in enumerate(sizes):
        if size >= MIN_PAN_DIGITS:
            if is_card_number(groups[i]) or _zero_padded_pan(groups[i]):
                return True
        elif size in _FIRST_GROUP_SIZES:
            total = size
            for j in range(i + 1, min(i + _MAX_GROUPS, len(groups))):
                total += sizes[j]
                if total > MAX_PAN_DIGITS:
                    break
                card_like = total >= MIN_PAN_DIGITS and tuple(sizes[i : j + 1]) in CARD_GROUPINGS
                if card_like and is_card_number("".join(groups[i : j + 1])):
                    return True
    return False


def looks_like_pan(text: str) -> bool:
    """True if ``text`` holds a plausible card number (see the module docstring)."""
    if text.isascii():  # the common case, kept fast: one regex scan finds nothing
        if len(text) < MIN_PAN_DIGITS or _CHAIN.search(text) is None:
            return False
        return any(_pan_in(groups) for groups in _digit_groups(text))
    return any(_pan_in(groups) for form in normalised_forms(text) for groups in _digit_groups(form))


def number_is_pan(value: int | float) -> bool:
    """True if a JSON number (``4111111111111111``, ``4111111111111111.5``) is a card number."""
    if isinstance(value, float):
        if not 10.0**12 <= abs(value) < 10.0**19:  # also False for NaN
            return False
        value = int(value)
    value = abs(value)
    return 10**12 <= value < 10**19 and is_card_number(str(value))
