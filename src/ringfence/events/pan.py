"""Card numbers (PANs) in text and numbers: what counts as one, and what does not.

A PAN is 13-19 digits whose issuer prefix and length belong to a card network and which
pass the Luhn check. It counts when written as one digit run (leading zeros or not), or in
a card-like grouping (4-4-4-4, 4-6-5, 4-4-4-4-3, ...) with runs of up to five separators:
every ASCII character that is no letter nor digit, and every Unicode punctuation, symbol or
space (categories P*, S*, Z*). Each character is read once (cached per code point): every
character with a ``unicodedata.digit`` value (full-width, superscript, circled, dingbat,
parenthesized digits) as its ASCII digit, a character whose NFKC form holds digits (``⑩``)
as that form, and every combining mark or format character (categories Mn, Me, Cf: zero-width
spaces, soft hyphens, accents, keycaps) both as nothing and as a separator.

A letter ends a digit group: a card number with a label or hex letters stuck to it
(``Visa4111 1111 1111 1111``, ``cafe4111111111111111beef``) is still a card number. Only
identifiers by shape are taken out before the scan: canonical UUIDs (any case, in braces,
after ``urn:uuid:``) and hex hashes of the standard lengths (32, 40, 56, 64, 96 or 128 hex
characters, ``0x`` or not) standing apart from other letters and digits. A chain right after
``+`` of at most 15 digits, or a run of ``00`` and at most 15 digits, is a phone number
(E.164), not a card.

Text holding escapes (a URL's ``%20``, a page's ``&#32;`` or ``&nbsp;``, ``%u0020``, ``\u0020``,
``\x20``) is also read decoded, layer after layer (``%2520``) until nothing changes: the
separators and digits they spell hide nothing. Text still changing after 16 layers, with 13
digits, is taken for a card number: no producer's data is encoded so often.

Every step is linear in the length of the text: one regex pass finds the digit chains; only
text holding one is searched for identifiers (taking them out only ever breaks chains).
"""

from __future__ import annotations

import functools
import html
import math
import re
import sys
import unicodedata
from collections.abc import Iterator
from fractions import Fraction
from urllib.parse import unquote

from ringfence.events.identifiers import IDENTIFIER, is_identifier
from ringfence.events.reading import ReadingTable

MIN_PAN_DIGITS, MAX_PAN_DIGITS = 13, 19
PAN_NUMBERS = (10 ** (MIN_PAN_DIGITS - 1), 10**MAX_PAN_DIGITS)  # the JSON numbers a PAN may be sent as
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
# the prefix ranges a PAN of each length and first digit may fall in, so a check looks at one
# or two ranges, not all
_PREFIX_RANGES = {
    (n, first): tuple((low, high) for low, high, lengths in _NETWORKS if n in lengths and low[0] <= first <= high[0])
    for n in range(MIN_PAN_DIGITS, MAX_PAN_DIGITS + 1)
    for first in "0123456789"
}
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")  # d -> 2d, less 9 past 9

# Inside the scanned text every ASCII character that is not a letter or a digit is a separator;
# every Unicode punctuation, symbol or space (P*, S*, Z*) is read as a space first.
_SEP = "[\\x00-\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7f]"
# Hangul fillers are letters (Lo) that render as nothing
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
_INVISIBLE = "\ufdd0"  # a noncharacter marks where an invisible character was
_INVISIBLE_CATEGORIES = frozenset({"Mn", "Me", "Cf", "Cc", "Cs"})
_INVISIBLE_RUN = re.compile(f"{_INVISIBLE}+")
# 13 or more digits and separator runs, from the start of a digit run to a digit; possessive,
# and never starting inside a run, so each character is looked at a bounded number of times
_CHAIN = re.compile(rf"(?<![0-9])[0-9](?:[0-9]|{_SEP}{{1,{MAX_SEPARATOR_RUN}}}+(?=[0-9])){{12,}}+")
_SEPARATOR_RUN = re.compile(f"{_SEP}+")

_NEUTRAL = "x"  # what an identifier (events.identifiers) is read as: neither a digit nor a separator
# a percent-escape, the start of a character reference (&#32; &#x20; &nbsp;), or a code
# point escape (%u0020, \u0020, \x20)
_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}|&#?[0-9A-Za-z]|%u[0-9A-Fa-f]{4}|\\u[0-9A-Fa-f]{4}|\\x[0-9A-Fa-f]{2}")
_CODE_POINT_ESCAPE = re.compile(r"[%\\]u([0-9A-Fa-f]{4})|\\x([0-9A-Fa-f]{2})")
MAX_ENCODING_LAYERS = 16


def luhn_valid(digits: str) -> bool:
    """True if ``digits``, ASCII digits only, passes the Luhn checksum (anything else does not)."""
    if not digits.isascii() or not digits.isdigit():
        return False
    raw = digits.encode()
    # every second digit from the right doubled, its digits summed, by one table; the sums of
    # byte strings run in C (the PAN search checks tens of thousands of groupings in 64 KB)
    total = sum(raw[-1::-2]) + sum(raw[-2::-2].translate(_LUHN_DOUBLED)) - 48 * len(raw)
    return total % 10 == 0


def is_card_number(digits: str) -> bool:
    """True if ``digits`` (ASCII digits only) has a card network's prefix and length and passes Luhn."""
    return _networked(digits) and luhn_valid(digits)


def _networked(digits: str) -> bool:
    """True if ``digits`` has a card network's prefix and length (Luhn aside)."""
    n = len(digits)
    if not MIN_PAN_DIGITS <= n <= MAX_PAN_DIGITS:
        return False
    return any(low <= digits[: len(low)] <= high for low, high in _PREFIX_RANGES.get((n, digits[0]), ()))


def _read_normalised(ch: str) -> str:
    """How the PAN search reads one character that NFKC leaves alone."""
    digit = unicodedata.digit(ch, None)
    if digit is not None:
        return str(digit)
    category = unicodedata.category(ch)
    if category in _INVISIBLE_CATEGORIES or ch in _BLANK_LETTERS or ch == _INVISIBLE:
        return _INVISIBLE
    if category[0] in "PSZ" or (ch.isascii() and not ch.isalnum()):
        return " "
    return ch


def _reading(code: int) -> str:
    """How the PAN search reads one character: its digit (``unicodedata.digit``, so circled and
    dingbat digits too), a space for a separator, the invisible mark, or its NFKC letters."""
    ch = chr(code)
    if code < 128:
        return ch  # as the ASCII path reads it: a tab or a newline separates
    if unicodedata.digit(ch, None) is not None or unicodedata.category(ch) in _INVISIBLE_CATEGORIES:
        return _read_normalised(ch)
    compatible = unicodedata.normalize("NFKC", ch)
    if compatible == ch:
        return _read_normalised(ch)
    if any(c.isdigit() for c in compatible):
        return "".join(map(_read_normalised, compatible))  # ⑩, "1日"
    if unicodedata.category(ch)[0] in "PSZ":
        return " "  # every punctuation, symbol or space separates, even "™" or "(a)"
    if compatible.isascii():
        return compatible  # full-width and mathematical letters (hex identifiers)
    return _read_normalised(ch)  # a ligature of letters (U+FDFA): one letter is enough


_READER = ReadingTable(_reading)


@functools.cache
def _digit_like() -> re.Pattern[str]:
    """The characters beyond ASCII that read as a digit, for a quick first look (built on first
    use, in about 0.1 s): every one whose ``unicodedata.digit`` or NFKC form holds a digit."""
    ranges: list[list[int]] = []
    for code in range(128, sys.maxunicode + 1):
        ch = chr(code)
        if not ch.isdigit() and not (
            unicodedata.decomposition(ch) and any(c.isdigit() for c in unicodedata.normalize("NFKC", ch))
        ):
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return re.compile("[0-9" + "".join(f"{chr(low)}-{chr(high)}" for low, high in ranges) + "]")


def normalised_forms(text: str) -> list[str]:
    """``text`` as the PAN search reads it: ASCII digits and ASCII separators.

    Two forms when ``text`` holds invisible characters: removed, and read as one separator.
    No form at all when it holds no character that reads as a digit: it holds no card number.
    """
    if text.isascii():
        return [text]
    if _digit_like().search(text) is None:
        return []
    text = text.translate(_READER)
    if _INVISIBLE not in text:
        return [text]
    return [text.replace(_INVISIBLE, ""), _INVISIBLE_RUN.sub(" ", text)]


def _without_identifiers(text: str) -> str:
    """``text`` with its UUIDs and standard-length hex hashes each read as one neutral letter."""

    def neutral(match: re.Match[str]) -> str:
        return _NEUTRAL if is_identifier(match) else match.group()

    return IDENTIFIER.sub(neutral, text)


def _digit_groups(text: str) -> Iterator[list[str]]:
    """Runs of digit groups joined by separators, without phone numbers.

    A letter, like any character that is no digit nor separator, ends a run: a label glued to a
    card number does not hide it.
    """
    for match in _CHAIN.finditer(text):
        start = match.start()
        groups = _SEPARATOR_RUN.split(match.group())
        if start and text[start - 1] == "+" and sum(map(len, groups)) <= MAX_PHONE_DIGITS:
            continue
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


def _decode_once(text: str) -> str:
    """One layer of ``text``'s escapes read (each shortens it: a fixed point comes)."""
    text = _CODE_POINT_ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), text)
    return html.unescape(unquote(text, errors="replace"))


def escapes_read(text: str) -> Iterator[str | None]:
    """``text`` with its escapes read, a layer at a time, until nothing changes; None after
    ``MAX_ENCODING_LAYERS`` layers if it still would."""
    for _ in range(MAX_ENCODING_LAYERS):
        if _ENCODED.search(text) is None:
            return
        decoded = _decode_once(text)
        if decoded == text:
            return
        text = decoded
        yield text
    if _ENCODED.search(text) is not None and _decode_once(text) != text:
        yield None


def looks_like_pan(text: str) -> bool:
    """True if ``text`` holds a plausible card number (see the module docstring)."""
    for form in (text, *escapes_read(text)):
        if form is None:  # encoded past any producer's data: enough digits are taken for one
            return sum(ch.isdigit() for ch in text) >= MIN_PAN_DIGITS
        if _holds_pan(form):
            return True
    return False


def _holds_pan(text: str) -> bool:
    for form in normalised_forms(text):
        # the common case, kept fast: one regex scan finds no chain (taking identifiers out
        # only ever breaks chains)
        if len(form) < MIN_PAN_DIGITS or _CHAIN.search(form) is None:
            continue
        if any(_pan_in(groups) for groups in _digit_groups(_without_identifiers(form))):
            return True
    return False


def number_is_pan(value: int | float) -> bool:
    """True if a JSON number (``4111111111111111``, ``4111111111111111.5``) is a card number.

    A float is the nearest double to the digits sent, not the digits: ``4079722471297025.9``
    arrives as ``4079722471297026.0``. So every integer part the digits sent may have had is
    tried: those of the numbers within half a unit in the last place of it (one or two below
    2**53; beyond it, up to some two thousand at 10**19, each a quick check)."""
    if isinstance(value, float):
        magnitude = abs(value)
        if not PAN_NUMBERS[0] <= magnitude < PAN_NUMBERS[1]:  # also False for NaN
            return False
        half_ulp = Fraction(math.ulp(magnitude)) / 2
        low, high = math.floor(Fraction(magnitude) - half_ulp), math.floor(Fraction(magnitude) + half_ulp)
        candidates = range(max(low, PAN_NUMBERS[0]), min(high, PAN_NUMBERS[1] - 1) + 1)
        # they differ in their last few digits only: a network's prefix is at either end or at
        # neither (checked first, so a float of 19 digits costs two checks, not two thousand)
        if not (_networked(str(candidates[0])) or _networked(str(candidates[-1]))):
            return False
        return any(is_card_number(str(n)) for n in candidates)
    value = abs(value)
    return PAN_NUMBERS[0] <= value < PAN_NUMBERS[1] and is_card_number(str(value))
