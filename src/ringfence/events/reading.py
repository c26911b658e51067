"""A ``str.translate`` table that reads each character once and remembers how, within a bound.

The PAN and IBAN searches read text one character at a time (a digit, a separator, an
invisible character, a letter): each code point is worked out once, so text beyond ASCII
costs a dictionary lookup per character, not a Unicode normalisation.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_REMEMBERED = 1 << 16  # code points remembered; text can hold any of 1.1 million


class ReadingTable(dict[int, str]):
    """``str.translate`` table reading every character with ``read`` (ASCII filled in up front)."""

    def __init__(self, read: Callable[[int], str]) -> None:
        super().__init__({code: read(code) for code in range(128)})
        self._read = read

    def __missing__(self, code: int) -> str:
        value = self._read(code)
        if len(self) < MAX_REMEMBERED:
            self[code] = value
        return value
