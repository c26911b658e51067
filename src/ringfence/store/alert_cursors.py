"""Cursors of the alert list that tell a key limited to some audiences nothing of the others'
alerts beyond their count to the nearest window (what the first page's window tells already).

A full page used to hand out its last alert's seq, and seqs count every audience's alerts: the
gap between two of a desk's own alerts told how many other desks had between them (a hostile
test). A full page's cursor now names its last alert by id, which its reader holds anyway,
after the window (``band`` seqs) it lies in: ``"<seq // band>.<id>"``. A page whose window ran
out before it filled names the window's floor as digits, always a multiple of ``band``, and
digits a caller made up are taken up to the multiple above them.
"""

from __future__ import annotations

import re
from typing import Any

from ringfence.store import paging

_NAMED = re.compile(r"([0-9]{1,13})\.(al_[0-9a-f]{24})")  # an alert id: ringfence.alerts.model.alert_id


def naming(seq: int, alert_id: str, band: int) -> str:
    """The cursor of a page whose last alert is ``alert_id`` (its seq ``seq``)."""
    return f"{seq // band}.{alert_id}"


def below(conn: Any, cursor: str | None, audiences: tuple[str, ...], band: int) -> int | None:
    """The seq a page continues below, or None for the first page. An alert the cursor names
    that is gone (retention) or that the caller may not see (``audiences``, when limited)
    continues from the top of the cursor's window: a page may repeat alerts, never skip one,
    and the answer is the same whether another desk's alert exists or not."""
    if cursor is None:
        return None
    named = _NAMED.fullmatch(cursor)
    if named is None:  # a window's floor: up to a multiple of ``band``, as every one given out is
        # (one made up to bisect for an alert's seq tells only the window it lies in: a review)
        return -(-(paging.after(cursor) or 0) // band) * band
    sql, args = "SELECT seq FROM alerts WHERE id = ?", [named[2]]
    if audiences:
        sql += f" AND audience IN ({', '.join('?' * len(audiences))})"  # placeholders only
        args.extend(audiences)
    row = conn.execute(sql, args).fetchone()
    if row is not None:
        return int(row[0])
    return (int(named[1]) + 1) * band  # 13 digits: under 2**62 for a band under 400,000
