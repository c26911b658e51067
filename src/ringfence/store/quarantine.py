"""Quarantined events: the events the engine or the state codec could not handle.

A runtime that finds such a *poison* event records it here (with where it was in the log,
why it failed and the pack that failed on it) and goes on with the next event, so no
single event can stop processing for everyone else. An admin lists them
(``GET /v1/quarantine``) and, after fixing the pack, re-drives them
(``POST /v1/quarantine/{id}/redrive``).

Rows are keyed by where the event was read, ``(origin, partition, log_offset)``: the embedded
processor's journal, or a kafka stage's input topic. Writing a row is idempotent, so a
runtime that replays a batch after a crash records its poison once.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from ringfence.clock import iso
from ringfence.errors import NotFound, StoreError, StoreUnavailable
from ringfence.events.sensitive import redact
from ringfence.store.connection import Connection

if TYPE_CHECKING:
    from ringfence.store.sql import SqlStore

JOURNAL = "journal"  # the embedded runtime's origin: offsets are the journal's
QUARANTINED = "quarantined"
REDRIVE_REQUESTED = "redrive_requested"  # the embedded processor re-runs it at its next batch
REDRIVEN = "redriven"
STATUSES = (QUARANTINED, REDRIVE_REQUESTED, REDRIVEN)
REASON_CHARS = 300
_DIGIT_RUN = re.compile(r"\d[\d .-]{10,}\d")  # long digit runs could be card or account numbers
_COLUMNS = (
    "id, origin, partition, log_offset, source, event_id, type, ingested_at, quarantined_at, stage, "
    "reason, pack_version, body, record_key, record_headers, status, attempts, redriven_at, redriven_by"
)


def reason_of(error: BaseException) -> str:
    """Why an event failed, for the quarantine row: the exception's type and message, cut
    short, with anything shaped like a card or account number masked."""
    # redact() stars out a card number in any spelling and masks IBANs; long digit runs go too
    message = _DIGIT_RUN.sub("[digits]", redact(str(error)[: REASON_CHARS * 4]))[:REASON_CHARS]
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


_PSYCOPG_STORE_FAILURES = ("OperationalError", "InterfaceError", "PoolTimeout")


def is_store_failure(error: BaseException) -> bool:
    """True for a failure of the store or the disk rather than of one event: retried as it is,
    never quarantined (a locked or full database, an I/O error, a lost connection).

    A MemoryError is not one: an event whose state grows without bound is found by the
    event-by-event retry and quarantined, instead of being retried for ever."""
    if isinstance(error, (OSError, sqlite3.OperationalError, sqlite3.InternalError, StoreUnavailable)):
        return True
    if type(error) is sqlite3.DatabaseError:  # "file is not a database", "malformed"
        return True
    # psycopg's are subclasses (DeadlockDetected, SerializationFailure, AdminShutdown, DiskFull,
    # ...) of these; matched by name so that the optional extra is not imported here
    return any(
        cls.__module__.startswith(("psycopg", "psycopg_pool")) and cls.__name__ in _PSYCOPG_STORE_FAILURES
        for cls in type(error).__mro__
    )


def identify(body: bytes) -> tuple[str, str, str]:
    """(source, event_id, type) of a stored event body, as far as it can be read."""
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return "", "", ""
    if not isinstance(doc, dict):
        return "", "", ""
    return tuple(str(doc.get(k) or "")[:128] for k in ("source", "event_id", "type"))  # type: ignore[return-value]


@dataclass(frozen=True)
class QuarantinedEvent:
    """An event to quarantine: where it was read, why it failed, and its stored body."""

    origin: str
    partition: int
    offset: int
    source: str
    event_id: str
    type: str
    ingested_at: float
    reason: str
    pack_version: str
    body: bytes
    stage: str = ""
    record_key: bytes | None = None  # kafka: the record's key and headers, to re-produce it as it was
    record_headers: bytes | None = None

    @classmethod
    def of(
        cls,
        body: bytes,
        offset: int,
        partition: int,
        ingested_at: float,
        error: BaseException,
        pack_version: str,
        *,
        origin: str = JOURNAL,
        stage: str = "",
        record_key: bytes | None = None,
        record_headers: bytes | None = None,
    ) -> QuarantinedEvent:
        source, event_id, type_ = identify(body)
        return cls(
            origin,
            partition,
            offset,
            source,
            event_id,
            type_,
            ingested_at,
            reason_of(error),
            pack_version,
            body,
            stage,
            record_key,
            record_headers,
        )


@dataclass(frozen=True)
class QuarantineEntry:
    """A quarantine row as the API and the runtimes read it."""

    id: int
    event: QuarantinedEvent
    quarantined_at: float
    status: str
    attempts: int
    redriven_at: float | None
    redriven_by: str | None

    def to_dict(self) -> dict[str, Any]:
        """The API's view: no event body (it may hold customer data the list need not show)."""
        e = self.event
        return {
            "id": str(self.id),
            "origin": e.origin,
            "stage": e.stage or None,
            "partition": e.partition,
            "offset": e.offset,
            "source": e.source,
            "event_id": e.event_id,
            "type": e.type,
            "ingested_at": iso(e.ingested_at),
            "quarantined_at": iso(self.quarantined_at),
            "reason": e.reason,
            "pack_version": e.pack_version,
            "status": self.status,
            "attempts": self.attempts,
            "redriven_at": iso(self.redriven_at) if self.redriven_at is not None else None,
            "redriven_by": self.redriven_by,
        }


def write(conn: Connection, events: list[QuarantinedEvent], redriven: list[int], now: float) -> None:
    """Inside a runtime's batch transaction: record ``events`` and mark ``redriven`` rows done.

    A row already quarantined stays as it is (a replayed batch records its poison once); a
    row that was re-driven and failed again goes back to quarantined with one more attempt.
    """
    if not events and not redriven:
        return
    conn.executemany(
        "INSERT INTO quarantine (origin, partition, log_offset, source, event_id, type, ingested_at, "
        "quarantined_at, stage, reason, pack_version, body, record_key, record_headers, status, attempts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'quarantined', 1) "
        "ON CONFLICT (origin, partition, log_offset) DO UPDATE SET status = 'quarantined', "
        "reason = excluded.reason, pack_version = excluded.pack_version, quarantined_at = excluded.quarantined_at, "
        "attempts = quarantine.attempts + 1 WHERE quarantine.status <> 'quarantined'",
        [
            (
                e.origin,
                e.partition,
                e.offset,
                e.source,
                e.event_id,
                e.type,
                e.ingested_at,
                now,
                e.stage,
                e.reason,
                e.pack_version,
                e.body,
                e.record_key,
                e.record_headers,
            )
            for e in events
        ],
    )
    conn.executemany(
        "UPDATE quarantine SET status = 'redriven', redriven_at = ? WHERE id = ?", [(now, i) for i in redriven]
    )


class QuarantineRepository:
    """The quarantine table over a store (SQLite or PostgreSQL)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def record(self, events: list[QuarantinedEvent], now: float) -> None:
        """Record ``events`` in a transaction of their own (the kafka workers: see their module)."""
        with self.store.transaction() as conn:
            write(conn, events, [], now)

    def entries(
        self, status: str | None = None, limit: int = 100, cursor: int | None = None
    ) -> tuple[list[QuarantineEntry], int | None]:
        """One page, newest first, and the cursor of the next (or None)."""
        sql = f"SELECT {_COLUMNS} FROM quarantine WHERE id < ?"  # nosec # noqa: S608 - constant columns
        args: list[Any] = [cursor if cursor is not None else 2**62]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        rows = self.store.conn().execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit + 1]).fetchall()
        items = [_entry(r) for r in rows[:limit]]
        return items, (items[-1].id if len(rows) > limit else None)

    def get(self, entry_id: int) -> QuarantineEntry:
        row = (
            self.store.conn()
            .execute(f"SELECT {_COLUMNS} FROM quarantine WHERE id = ?", (entry_id,))  # nosec # noqa: S608
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no quarantined event {entry_id}")
        return _entry(row)

    def counts(self) -> dict[str, int]:
        """Rows per status (every status listed)."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self.store.conn().execute("SELECT status, count(*) FROM quarantine GROUP BY status"):
            out[str(status)] = int(n)
        return out

    def requested(self, limit: int = 100) -> list[QuarantineEntry]:
        """Rows an admin asked to re-drive, oldest request first (the embedded processor's work)."""
        rows = (
            self.store.conn()
            .execute(
                f"SELECT {_COLUMNS} FROM quarantine WHERE status = ? ORDER BY id LIMIT ?",  # nosec # noqa: S608
                (REDRIVE_REQUESTED, limit),
            )
            .fetchall()
        )
        return [_entry(r) for r in rows]

    def request_redrive(self, entry_id: int, actor: str, now: float) -> QuarantineEntry:
        """Claim a quarantined event for a re-drive (audited): the embedded processor runs it at
        its next batch; the kafka API re-produces it and calls :meth:`finish_redrive`."""
        with self.store.transaction() as conn:
            row = conn.execute("SELECT status FROM quarantine WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                raise NotFound(f"no quarantined event {entry_id}")
            if row[0] != QUARANTINED:
                raise StoreError(f"quarantined event {entry_id} is {row[0]}, not quarantined")
            conn.execute(
                "UPDATE quarantine SET status = ?, redriven_by = ? WHERE id = ?", (REDRIVE_REQUESTED, actor, entry_id)
            )
            self.store.audit(conn, now, actor, "quarantine.redrive", str(entry_id), {})
        return self.get(entry_id)

    def finish_redrive(self, entry_id: int, now: float) -> QuarantineEntry:
        """The runtime took the event back (kafka: re-produced it): mark it redriven."""
        with self.store.transaction() as conn:
            write(conn, [], [entry_id], now)
        return self.get(entry_id)

    def release(self, entry_id: int) -> None:
        """The runtime could not take the event back: it is quarantined again."""
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE quarantine SET status = 'quarantined', redriven_by = NULL WHERE id = ? AND status = ?",
                (entry_id, REDRIVE_REQUESTED),
            )


def _entry(row: tuple[Any, ...]) -> QuarantineEntry:
    event = QuarantinedEvent(
        origin=row[1],
        partition=int(row[2]),
        offset=int(row[3]),
        source=row[4],
        event_id=row[5],
        type=row[6],
        ingested_at=float(row[7]),
        stage=row[9],
        reason=row[10],
        pack_version=row[11],
        body=bytes(row[12]),
        record_key=bytes(row[13]) if row[13] is not None else None,
        record_headers=bytes(row[14]) if row[14] is not None else None,
    )
    return QuarantineEntry(
        id=int(row[0]),
        event=event,
        quarantined_at=float(row[8]),
        status=row[15],
        attempts=int(row[16]),
        redriven_at=float(row[17]) if row[17] is not None else None,
        redriven_by=row[18],
    )
