"""How far the store has processed the journal, recorded outside the store.

A store put back from an older copy (a restored backup, a file copied back by hand) has
processed less of the journal than it had: served, it would run those events again and notify
their alerts again under new ids. Its audit trail's anchor finds it only when a person's change
came in between. So the processor also records its committed offset in a file beside the
journal (not the store: a store restored from a backup comes with its own files), replaced
whole every few seconds: the store's commit is durable before the offset is recorded, so a
crash never leaves the file ahead of the store, and a start that finds the store behind it
refuses to serve it (:meth:`ProgressAnchor.check`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from ringfence.errors import RingfenceError, StoreError
from ringfence.private_files import checked_own_file, open_private

log = logging.getLogger(__name__)

RECORD_EVERY_S = 5.0  # an fsync and a rename every few seconds, not one a commit


class ProgressAnchor:
    """The offset recorded in ``path`` (``journal.sqlite3-processed``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._recorded_at = -math.inf  # monotonic
        self._recorded: int | None = None

    def recorded(self) -> int | None:
        """The offset last recorded; None before the first record."""
        try:
            checked_own_file(self.path)  # a link, a FIFO or another user's file is refused
            with open(self.path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW)) as anchor:
                text = anchor.read(32)
        except FileNotFoundError:
            return None
        try:
            return int(text)
        except ValueError:
            raise StoreError(f"{self.path} does not hold an offset: move it aside to start without it") from None

    def record(self, offset: int, *, now: bool = False) -> None:
        """Record ``offset``, committed, unless one was recorded in the last few seconds (and not
        ``now``). A failure (a full disk) is logged and tried again later: it costs no event."""
        at = time.monotonic()
        if offset == self._recorded or (not now and at - self._recorded_at < RECORD_EVERY_S):
            return
        self._recorded_at = at
        draft = self.path.with_name(self.path.name + ".new")
        try:
            with open_private(draft, "w") as handle:
                handle.write(str(offset))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(draft, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except (OSError, RingfenceError) as error:  # RingfenceError: UnsafeFile, a link planted as the draft
            log.warning("recording the processed offset in %s failed (%s): tried again", self.path.name, error)
            return
        self._recorded = offset

    def check(self, processed: int) -> None:
        """Refuse a store that has processed less than was recorded: it was rolled back."""
        recorded = self.recorded()
        if recorded is not None and processed < recorded:
            raise StoreError(
                f"the store has processed the journal up to offset {processed}, but {self.path.name} recorded "
                f"{recorded}: the store was rolled back (an older copy put back). Served, it would process those "
                "events again and notify their alerts again. Put back the newest store, or, to serve this one "
                "knowingly, move the anchor file aside first"
            )
