"""IBANs in text (ISO 13616): found in any case, with spaces, dashes or dots, in full-width
or other compatibility forms (read after NFKC), even glued to other characters, and told
from look-alikes by the country's length and the mod-97 check digits."""

from __future__ import annotations

import re
import unicodedata

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
# separators people put inside an IBAN: spaces (NBSP, narrow ones), hyphen, dashes, dots
_SEPARATORS = frozenset(" -.\u00a0\u2007\u202f\u2010\u2011\u2012\u2013\u2014\u2212")
MAX_SEPARATOR_RUN = 3
_START = re.compile(r"[A-Za-z]{2}[0-9]{2}")


def iban_valid(compact: str) -> bool:
    """True if ``compact`` (letters and digits only, any case) is an IBAN: known country,
    its length, and the ISO 7064 mod-97 check."""
    if IBAN_LENGTHS.get(compact[:2].upper()) != len(compact) or not compact.isascii() or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _read(text: str, start: int, length: int) -> tuple[int, str]:
    """From ``start``, up to ``length`` letters and digits with separator runs between them."""
    chars: list[str] = []
    i, run = start, 0
    while i < len(text) and len(chars) < length:
        ch = text[i]
        if ch.isascii() and ch.isalnum():
            chars.append(ch)
            run = 0
        elif ch in _SEPARATORS and run < MAX_SEPARATOR_RUN:
            run += 1
        else:
            break
        i += 1
    return i, "".join(chars)


def iban_spans(text: str) -> list[tuple[int, int, str]]:
    """Each IBAN in ``text``: its start, end and compact form."""
    found: list[tuple[int, int, str]] = []
    end = 0
    for match in _START.finditer(text):
        if match.start() < end:
            continue
        length = IBAN_LENGTHS.get(match.group()[:2].upper())
        if length is None:
            continue
        stop, compact = _read(text, match.start(), length)
        if len(compact) == length and iban_valid(compact):
            found.append((match.start(), stop, compact))
            end = stop
    return found


def mask_account(value: str) -> str:
    """Keep the first two (country) and last four characters: ``GB**************1234``."""
    compact = "".join(ch for ch in value if ch not in _SEPARATORS)
    if len(compact) <= 6:
        return "*" * len(compact)
    return compact[:2] + "*" * (len(compact) - 6) + compact[-4:]


def mask_ibans(text: str) -> str:
    """``text`` with every IBAN in it masked.

    Text that is not ASCII is searched in its NFKC form (full-width letters and digits), and
    comes back in that form when it holds an IBAN.
    """
    if len(text) < MIN_IBAN:
        return text
    original = text
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    spans = iban_spans(text)
    if not spans:
        return original
    parts, last = [], 0
    for start, stop, compact in spans:
        parts += [text[last:start], mask_account(compact)]
        last = stop
    parts.append(text[last:])
    return "".join(parts)
