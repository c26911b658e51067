"""Back-tests in the embedded runtime: the journal's records after an offset, read-only, in the
bounded child process of :mod:`ringfence.runtimes.backtest`
(``python -m ringfence.runtimes.embedded.backtest``)."""

from __future__ import annotations

import sys
from pathlib import Path

from ringfence.runtimes.backtest import BacktestJob, Rows, main
from ringfence.runtimes.embedded.journal import SqliteLog

CHILD_MODULE = "ringfence.runtimes.embedded.backtest"
READ_CHUNK = 1_000


def journal_rows(job: BacktestJob) -> tuple[int, Rows]:
    """Up to ``job.limit`` records after ``job.after``: about how many, and the records."""
    log = SqliteLog.open_read_only(Path(job.journal))
    try:
        total = min(log.count_after(job.after), job.limit)
    except BaseException:
        log.close()
        raise
    return total, _records(log, job.after, job.limit)


def _records(log: SqliteLog, after: int, limit: int) -> Rows:
    """The records, a chunk at a time; the journal is closed when they end."""
    try:
        while limit > 0:
            records = log.read(after, min(READ_CHUNK, limit))
            if not records:
                return
            yield from ((r.offset, r.partition, r.ingested_at, r.body) for r in records)
            after, limit = records[-1].offset, limit - len(records)
    finally:
        log.close()


if __name__ == "__main__":
    sys.exit(main(journal_rows))
