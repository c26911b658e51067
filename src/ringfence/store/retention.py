"""Retention over a table keyed by ``offset`` whose rows are stamped ``ingested_at`` in offset
order (the embedded journal, and the late events that copy its offsets and times).

Neither has an index on ``ingested_at``: the journal's would slow every append. A ``DELETE
... WHERE ingested_at < ?`` scanned the whole table, and stalled its caller for longer the more
the table held. Here the last old-enough offset is found by a binary search on the primary key,
and a bounded slice is deleted from the start of the key up to it. A row stamped out of order
(the wall clock stepped back) is still never dropped before its time: the cut-off is tested on
every row deleted; such a row, or rows stamped ahead of the clock, can keep the rows after
them a while past the cut-off (the search stops before them), never delete them early.
"""

from __future__ import annotations

from typing import Literal, get_args

from ringfence.store.connection import Connection

Table = Literal["journal", "late_events"]
TABLES = get_args(Table)


def delete_oldest(conn: Connection, table: Table, ingested_before: float, up_to: int, max_rows: int) -> int:
    """Delete up to ``max_rows`` of the oldest rows of ``table`` with an offset up to ``up_to``
    ingested before the cut-off; return how many (fewer than ``max_rows``: none are left)."""
    if table not in TABLES or max_rows < 1:  # the name goes into the SQL; LIMIT -1 is no limit
        raise ValueError(f"retention of {table!r}, {max_rows} rows at a time")
    first = conn.execute(f"SELECT min(offset) FROM {table}").fetchone()[0]  # nosec # noqa: S608 - a fixed name
    if first is None:
        return 0
    low, high = int(first) - 1, up_to  # ``low``: old enough, or before every row
    while low < high:  # the last offset whose next row (in order) was ingested before the cut-off
        mid = (low + high + 1) // 2
        next_row = conn.execute(
            f"SELECT ingested_at FROM {table} WHERE offset >= ? ORDER BY offset LIMIT 1",  # nosec # noqa: S608 - a fixed name
            (mid,),
        ).fetchone()
        if next_row is not None and next_row[0] < ingested_before:
            low = mid
        else:
            high = mid - 1
    cur = conn.execute(
        f"DELETE FROM {table} WHERE offset IN (SELECT offset FROM {table} "  # nosec # noqa: S608 - a fixed name
        "WHERE offset <= ? AND ingested_at < ? ORDER BY offset LIMIT ?)",  # a fixed name; values bound
        (low, ingested_before, max_rows),
    )
    return int(cur.rowcount)
