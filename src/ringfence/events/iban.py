"""IBANs in text (ISO 13616): found in any case, with runs of separators (any punctuation,
symbol, space or invisible character), in full-width or other compatibility forms, with
Cyrillic or Greek letters that look like Latin ones, even glued to other characters, and told
from look-alikes by the country's length and the mod-97 check digits. Nothing that overlaps
an identifier by shape (a UUID, a hex hash: ``events.identifiers``) is an IBAN.

Each character is read as one character (:func:`_reading`, cached per code point), so the
text is searched in one linear pass and an IBAN is masked in place, the rest left as sent.
"""

from __future__ import annotations

import re
import string
import unicodedata

from ringfence.events.identifiers import identifier_spans
from ringfence.events.reading import ReadingTable

# IBAN length per country: SWIFT's IBAN registry, plus the countries that issue IBANs outside it.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AO": 25, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BF": 28,
    "BG": 22, "BH": 22, "BI": 27, "BJ": 28, "BR": 29, "BY": 28, "CF": 27, "CG": 27, "CH": 21,
    "CI": 28, "CM": 27, "CR": 22, "CV": 25, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18,
    "DO": 28, "DZ": 26, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GA": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GQ": 27, "GR": 27, "GT": 28, "GW": 25,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IR": 26, "IS": 26, "IT": 27,
    "JO": 30, "KM": 27, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MA": 28, "MC": 27, "MD": 24, "ME": 22, "MG": 27, "MK": 19, "ML": 28,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "MZ": 25, "NE": 28, "NI": 28, "NL": 18, "NO": 15,
    "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SN": 28, "SO": 23,
    "ST": 25, "SV": 28, "TD": 27, "TG": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22,
    "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
MIN_IBAN = min(IBAN_LENGTHS.values())
MAX_SEPARATOR_RUN = 5  # visible separators in a row; invisible characters are not counted
_SEPARATOR = " "
_INVISIBLE = "\u200b"
_OTHER = "\ufffd"  # a character that is neither a letter, a digit nor a separator
# Cyrillic and Greek capitals and small letters drawn like a Latin one
_LOOKALIKES = dict(
    zip(
        "АВЕЅІЈКМНОРСТХУԌԚԜавеѕіјкмнорстхуԁһӏԛԝΑΒΕΖΗΙΚΜΝΟΡΤΥΧαβεικνορτυχ",
        "ABESIJKMHOPCTXYGQWabesijkmhopctxydhlqwABEZHIKMNOPTYXabeikvoptux",
        strict=True,
    )
)
_GAP = "[ \u200b]*+"  # a separator or an invisible character, as read
_START = re.compile(f"(?=([A-Za-z]){_GAP}([A-Za-z]){_GAP}[0-9]{_GAP}[0-9])")


def _reading(code: int) -> str:
    """One character as the IBAN search reads it: an ASCII letter or digit, a separator, an
    invisible character, or another character."""
    ch = chr(code)
    if ch.isascii():
        return ch if ch.isalnum() else _SEPARATOR
    compatible = unicodedata.normalize("NFKC", ch)
    if len(compatible) == 1:
        ch = _LOOKALIKES.get(compatible, compatible)
        if ch.isascii():
            return ch if ch.isalnum() else _SEPARATOR
    digit = unicodedata.digit(ch, None)
    if digit is not None:
        return str(digit)
    category = unicodedata.category(ch)
    if category in ("Mn", "Me", "Cf"):
        return _INVISIBLE
    return _SEPARATOR if category[0] in "PSZ" else _OTHER


_READER = ReadingTable(_reading)


def iban_valid(compact: str) -> bool:
    """True if ``compact`` (letters and digits only, any case) is an IBAN: known country,
    its length, digits where its country's account numbers have only digits, and the ISO 7064
    mod-97 check."""
    country = compact[:2].upper()
    if IBAN_LENGTHS.get(country) != len(compact) or not compact.isascii() or not compact.isalnum():
        return False
    if country in NUMERIC_ACCOUNTS and not compact[2:].isdigit():
        return False  # letters where the country has none: text (an IPv6 address's "be86::ffff:…")
    rearranged = compact[4:] + compact[:4]
    return int(rearranged.translate(_LETTER_NUMBERS)) % 97 == 1


# countries whose account numbers (the IBAN after its check digits) are digits only, by SWIFT's
# IBAN registry: letters there make a look-alike, not an IBAN, whatever its check digits say
NUMERIC_ACCOUNTS = frozenset(
    {
        "AE",
        "AT",
        "BA",
        "BE",
        "CZ",
        "DE",
        "DK",
        "EE",
        "EG",
        "ES",
        "FI",
        "FO",
        "GL",
        "HR",
        "HU",
        "IL",
        "IS",
        "LT",
        "ME",
        "NO",
        "PL",
        "PT",
        "RS",
        "SE",
        "SI",
        "SK",
        "TN",
    }
)


def _iban_shape(length: int) -> re.Pattern[str]:
    """``length`` letters and digits, with up to MAX_SEPARATOR_RUN separators (and any number of
    invisible characters) between two of them; possessive, so one try is one pass."""
    gap = f"(?:{_INVISIBLE}*+{_SEPARATOR}){{0,{MAX_SEPARATOR_RUN}}}+{_INVISIBLE}*+"
    return re.compile(f"[A-Za-z0-9](?:{gap}[A-Za-z0-9]){{{length - 1}}}")


_LETTER_NUMBERS = {ord(ch): str(int(ch, 36)) for ch in string.ascii_letters}  # ISO 7064: A=10 .. Z=35
_SHAPES = {length: _iban_shape(length) for length in set(IBAN_LENGTHS.values())}
_NOT_ALNUM = re.compile("[^A-Za-z0-9]+")


def iban_spans(text: str) -> list[tuple[int, int, str]]:
    """Each IBAN in ``text``: its start, end and compact form."""
    reading = text if text.isascii() and text.isalnum() else text.translate(_READER)
    found: list[tuple[int, int, str]] = []
    end = 0
    identifiers: list[tuple[int, int]] | None = None  # found once a candidate needs them
    for match in _START.finditer(reading):
        if match.start() < end:
            continue
        length = IBAN_LENGTHS.get((match.group(1) + match.group(2)).upper())
        if length is None:
            continue
        shaped = _SHAPES[length].match(reading, match.start())
        if shaped is None:
            continue
        if identifiers is None:
            identifiers = _standing_apart(identifier_spans(text), reading)
        if any(start < shaped.end() and shaped.start() < stop for start, stop in identifiers):
            continue  # an id's hex digits (events.identifiers), not an account number
        compact = _NOT_ALNUM.sub("", shaped.group())
        if iban_valid(compact):
            found.append((match.start(), shaped.end(), compact))
            end = shaped.end()
    return found


def _standing_apart(spans: list[tuple[int, int]], reading: str) -> list[tuple[int, int]]:
    """The identifiers found in the text as sent that stand apart as the search reads it too (the
    reading has a character for each of the text's): a full-width or look-alike letter glued
    to one is a letter here, so the run is text, searched like any other."""

    def letter_or_digit(at: int) -> bool:
        return 0 <= at < len(reading) and reading[at].isascii() and reading[at].isalnum()

    return [(start, stop) for start, stop in spans if not letter_or_digit(start - 1) and not letter_or_digit(stop)]


def mask_account(value: str) -> str:
    """Keep the first two (country) and last four characters: ``GB**************1234``."""
    reading = value.translate(_READER)  # one character for one: other characters are kept as sent
    kept = (sent if read == _OTHER else read for sent, read in zip(value, reading, strict=True))
    compact = "".join(ch for ch in kept if ch not in (_SEPARATOR, _INVISIBLE))
    if len(compact) <= 6:
        return "*" * len(compact)
    return compact[:2] + "*" * (len(compact) - 6) + compact[-4:]


def mask_ibans(text: str) -> str:
    """``text`` with every IBAN in it masked (written in ASCII), the rest left as it is."""
    if len(text) < MIN_IBAN:
        return text
    spans = iban_spans(text)
    if not spans:
        return text
    parts, last = [], 0
    for start, stop, compact in spans:
        parts += [text[last:start], mask_account(compact)]
        last = stop
    parts.append(text[last:])
    return "".join(parts)
