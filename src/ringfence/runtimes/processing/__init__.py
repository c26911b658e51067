"""Processing, the same in every runtime: log records -> engine -> one atomic commit.

The driver owns what a runtime must get right to keep Ringfence's guarantees (DESIGN §1,
processing semantics), so that each runtime brings only plumbing:

- **one commit per batch** (:mod:`.batch`): a batch's alerts, state changes, partition event
  times, late events, quarantined events and the offsets past its records are committed
  together or not at all. Replaying from the committed offsets regenerates what a crash lost,
  with the same alert ids: no acknowledged event is lost and no alert is duplicated;
- **late events** (:func:`.batch.late_event`): an event behind its partition's watermark is
  processed, and recorded;
- **event time** (:mod:`.eventtime`): absence timers fire on the watermark and, once a
  partition is quiet, on the wall clock (the one rule of idle timers); quiet keys' state
  expires on a cadence, never past the wall clock;
- **poison** (:mod:`.driver`): a batch that fails for anything but the store or the log is run
  again record by record from the last commit; a record the decoder, the engine or the state
  codec cannot handle is quarantined with its reason and the others are committed (of a
  record holding several events, that event alone: :class:`~.driver.PartSetAside`).

A runtime supplies a :class:`~.driver.Runner`: it folds its source's records into its
engine(s) (the embedded journal; a Kafka consumer's stage tasks; a Kinesis shard's batch
with state loaded from DynamoDB), and commits a batch through its state backend and
committer (SQLite: :meth:`~ringfence.store.sql.SqlStore.commit_batch` with the state
changelog of :mod:`ringfence.store.state_log`; Kafka: a transaction with the changelog
topics; DynamoDB: a ``TransactWriteItems`` with event markers).
"""

from ringfence.runtimes.processing.batch import Batch, late_event
from ringfence.runtimes.processing.driver import Driver, Partition, PartSetAside, Runner, log_quarantined
from ringfence.runtimes.processing.eventtime import Cadence, EventClock, expire, expiry_watermark

__all__ = [
    "Batch",
    "Cadence",
    "Driver",
    "EventClock",
    "PartSetAside",
    "Partition",
    "Runner",
    "expire",
    "expiry_watermark",
    "late_event",
    "log_quarantined",
]
