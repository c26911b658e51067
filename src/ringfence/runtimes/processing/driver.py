"""The driver: how every runtime turns records into commits (see the package docstring)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, Protocol

from ringfence.engine.engine import Engine
from ringfence.runtimes.processing.batch import Batch, R
from ringfence.runtimes.processing.eventtime import EXPIRE_EVERY_S, IDLE_EVERY_S, Cadence, EventClock, expire
from ringfence.store.quarantine import QuarantinedEvent

log = logging.getLogger("ringfence.processing")


def log_quarantined(entry: QuarantinedEvent) -> QuarantinedEvent:
    """Say that ``entry`` is quarantined (the exception's name only: its message may quote the
    event's data); return it."""
    log.error(
        "quarantined %s[%d]@%d (event %s/%s, %s%s): %s",
        entry.origin,
        entry.partition,
        entry.offset,
        entry.source,
        entry.event_id,
        entry.type,
        f", stage {entry.stage}" if entry.stage else "",
        entry.reason.partition(":")[0],
    )
    return entry


class PartSetAside(Exception):
    """Raised by a runner's fold when one event of a record holding several failed: the runner
    noted it, and quarantines it, instead of folding it, when the record runs again. The driver
    runs the record again at once (from the last commit), rather than quarantine the others
    with it. Each raise sets aside one more event, so a record runs at most once per event.
    Only a runner that commits each record on its own (``commit_each``) raises it."""


class Partition(Protocol):
    """An engine and the event time of the log partitions it owns."""

    engine: Engine
    event_time: EventClock

    def expired(self, watermark: float) -> None:
        """Drop the runtime's own per-key state last seen before ``watermark`` (the engine's
        has just gone)."""


class Runner(Protocol[R]):
    """A runtime's side of the driver: its source's records, its state backend, its committer."""

    def fold(self, records: Sequence[R], batch: Batch[R]) -> None:
        """Run ``records`` (maybe none) through the engine into ``batch``, then take the state
        changes into it (the state codec runs here: an event it cannot handle fails here, not
        in the commit)."""

    def commit(self, batch: Batch[R]) -> None:
        """Write all of ``batch`` and the offsets past its records atomically, or nothing."""

    def reset(self, records: Sequence[R] | None) -> None:
        """Drop what the engine state holds beyond the last commit: the state ``records``
        belong to, or all of it (None)."""

    def uncommitted(self, records: Sequence[R]) -> Sequence[R]:
        """Those of ``records`` the committed offsets are not past yet, in order."""

    def poisoned(self, record: R, error: Exception) -> QuarantinedEvent:
        """The quarantine entry of ``record``, which failed with ``error``."""

    def transient(self, error: Exception) -> bool:
        """True for a failure of the store or the log (retried as it is), not of one event."""


class Driver(Generic[R]):
    """Runs a runtime's records through its :class:`Runner`.

    A transient failure (:meth:`Runner.transient`) is raised as it is: the caller resets
    the runner and tries again once its store is back. Any other failure of a batch runs it
    again record by record from the last commit, and quarantines each record that fails in
    the commit that moves past it. With ``commit_each`` every record then commits on its
    own; without, the good records between two poison records commit together, falling
    back to one commit per record should such a commit fail (an alert the store refuses).

    With ``in_order`` (the runner's fold puts each record in the batch's ``records`` once it
    folded it, so a failed fold says which record failed), a batch that failed folding a
    record commits the records before it together, runs that record alone (``commit_each``'s
    way), and the rest as a batch again: a poison record costs a few commits, not one for
    every record of its batch (a commit may be a Kafka transaction, some milliseconds each).
    A failure the fold did not place (the state codec's, run once for the whole batch) runs
    the batch once more after the reset, which the runner folds event by event; with
    ``places_after_reset`` False (a runner whose fold runs a batch alike after a reset) it runs
    record by record at once instead.
    """

    def __init__(
        self,
        runner: Runner[R],
        *,
        commit_each: bool = False,
        in_order: bool = False,
        places_after_reset: bool = True,
    ) -> None:
        self.runner = runner
        self.commit_each = commit_each
        self.in_order = in_order
        self.places_after_reset = places_after_reset
        self.idle = Cadence(IDLE_EVERY_S)
        self.expiry = Cadence(EXPIRE_EVERY_S)

    def cycle(self, records: Sequence[R], partitions: Iterable[Partition], now: float) -> None:
        """One turn of a runtime's loop: ``records``, then, when their time comes, the absence
        timers the wall clock made due in quiet partitions and the expiry of quiet keys, all
        in one commit."""
        idle, expiry = self.idle.due(now), self.expiry.due(now)
        if not (records or idle or expiry):
            return

        def housekeeping(batch: Batch[R]) -> None:
            if not (idle or expiry):
                return
            for p in partitions:
                if idle:
                    batch.signals += p.event_time.fire_idle(p.engine, now)
                if expiry and (mark := expire(p.engine, now)) is not None:
                    p.expired(mark)
            self.runner.fold([], batch)  # takes the state changes they made

        self._run(records, housekeeping)

    def run(self, records: Sequence[R]) -> None:
        """Fold and commit ``records`` as one batch (poison isolated as the class says)."""
        self._run(records, lambda batch: None)

    def _run(self, records: Sequence[R], then: Callable[[Batch[R]], None]) -> None:
        batch: Batch[R] = Batch()
        try:
            self.runner.fold(records, batch)
            then(batch)
            self.runner.commit(batch)
        except Exception as error:
            if not records or self.runner.transient(error):
                raise  # no record to blame, or not theirs
            if self.in_order and len(batch.records) < len(records):
                self._around(records, len(batch.records), error)
            else:
                self._isolate(records, error)

    def _around(self, records: Sequence[R], failed: int, error: Exception) -> None:
        """The records before the one at ``failed`` folded: commit them together, run that one
        alone, then the rest as a batch, and so on at each record that fails."""
        log.error(
            "record %d of a batch of %d failed (%s): the records before it commit together, it runs alone",
            failed + 1,
            len(records),
            type(error).__name__,
        )
        while True:
            self.runner.reset(records[: failed + 1])  # what they did beyond the last commit goes
            if failed and (refused := self._batch(records[:failed])) is not None:
                self._isolate(records, refused[1], place=False)  # a commit the store refuses: no guess again
                return
            self._one_by_one(records[failed : failed + 1], commit_each=True)
            records = self.runner.uncommitted(records[failed + 1 :])
            if not records or (outcome := self._batch(records)) is None:
                return
            failed, error = outcome
            if failed >= len(records):  # not a record's fold: the ways without a guess
                self._isolate(records, error, place=False)
                return

    def _batch(self, records: Sequence[R]) -> tuple[int, Exception] | None:
        """Fold and commit ``records`` as one batch: None once committed, else how many folded
        before the failure (all of them: it was no record's fold) and the failure. A transient
        failure is raised."""
        batch: Batch[R] = Batch()
        try:
            self.runner.fold(records, batch)
            self.runner.commit(batch)
        except Exception as error:
            if self.runner.transient(error):
                raise
            return len(batch.records), error
        return None

    def _isolate(self, records: Sequence[R], error: Exception, *, place: bool = True) -> None:
        """Run ``records`` again from the last commit, record by record (``place``, with
        ``in_order``: first as a batch, which the runner's fold may now place a failure in)."""
        log.error("a batch of %d records failed (%s): running it record by record", len(records), type(error).__name__)
        self.runner.reset(None)
        # after a reset the runner's fold may place what failed (its state codec, event by event)
        if self.in_order and place and self.places_after_reset:
            if (outcome := self._batch(records)) is None:
                return
            failed, again = outcome
            if failed < len(records):
                self._around(records, failed, again)
                return
            self.runner.reset(None)
        try:
            self._one_by_one(records, self.commit_each)
        except Exception as again:
            if self.commit_each or self.runner.transient(again):
                raise
            log.warning("a commit of the record-by-record run failed (%s): one commit per record", type(again).__name__)
            self.runner.reset(None)
            self._one_by_one(records, commit_each=True)

    def _one_by_one(self, records: Sequence[R], commit_each: bool) -> None:
        batch: Batch[R] = Batch()
        for record in self.runner.uncommitted(records):
            while True:
                one: Batch[R] = Batch()
                try:
                    self.runner.fold([record], one)
                    if commit_each:
                        self.runner.commit(one)
                    else:
                        batch.merge(one)
                except PartSetAside:
                    self.runner.reset([record])  # what the run did goes; the event that failed is set aside
                    continue
                except Exception as error:
                    if self.runner.transient(error):
                        raise
                    entry = log_quarantined(self.runner.poisoned(record, error))
                    batch.quarantine(record, entry)
                    self.runner.commit(batch)  # the good records before it, and the offset past it
                    batch = Batch()
                    # what it did to the in-memory state goes with it: back to the last commit,
                    # which holds every record before it
                    self.runner.reset([record])
                break
        if batch.records:
            self.runner.commit(batch)
