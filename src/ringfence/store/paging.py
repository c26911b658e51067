"""Opaque page cursors over a table's unique, monotonic ``seq``: the API hands out the seq of
a page's last row as a string of digits, and a cursor it could not have given out is a 400."""

from __future__ import annotations

import re
from typing import Any

from ringfence.errors import InvalidCursor

_CURSOR = re.compile(r"[0-9]{1,18}")  # what the OpenAPI document promises


def after(cursor: str | None) -> int | None:
    """The seq a page continues below, or None for the first page."""
    if cursor is None:
        return None
    if not _CURSOR.fullmatch(cursor):
        raise InvalidCursor
    return int(cursor)


def page(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """The first ``limit`` of ``rows`` (fetched ``limit + 1``, seq first, newest first) and the
    cursor of the next page, or None if this is the last."""
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], str(rows[limit - 1][0])
