"""The store's repositories in SQL that SQLite and PostgreSQL share: alerts and their history
(the alert pipeline's ``AlertRepository``; its ``PipelineStore`` is :mod:`.pipeline`),
checkpoints and audit. They persist what :mod:`ringfence.alerts.lifecycle` decides.

Alerts and the processor checkpoint share a database so that :meth:`SqlStore.commit_batch`
commits a batch's alerts and the offset they reflect in one transaction: a crash either
keeps both or neither, and replay from the checkpoint recreates exactly what was lost.
Subclasses bring the connection, the transaction and the migrations of their engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ringfence.alerts import lifecycle
from ringfence.alerts.lifecycle import ACTIVE, SYSTEM_ACTOR
from ringfence.alerts.model import (
    MAX_COMMENTS,
    SHOWN_ENTRIES,
    Action,
    Alert,
    AlertChange,
    AlertQuery,
    AlertStatus,
    Comment,
    Decision,
    HistoryEntry,
    Notification,
    alert_id,
)
from ringfence.alerts.ports import AlertRepository, PipelineStore
from ringfence.clock import iso
from ringfence.engine.rules import AlertSignal
from ringfence.errors import NotFound, RequestError, StaleBatch
from ringfence.store import alert_cursors, notifications, quarantine
from ringfence.store import audit as audit_chain
from ringfence.store.base import Checkpoint, LateEvent
from ringfence.store.connection import Connection
from ringfence.store.pipeline import SqlPipeline, add_history, announce
from ringfence.store.state_log import SnapshotSource, StateLog

RULE_HITS_KEPT_MINUTES = 2 * 24 * 60  # per-minute hit counts answer "last hour" and "last day"
_json = msgspec.json.Encoder()
LOOKUP_KEYS = 64  # (rule, dedup key) pairs a lookup query takes
SCAN_ALERTS = 50_000  # alerts a page of the list looks at, at most (about 20 ms)


def _of_keys(select: str) -> str:
    """``select`` over ``k(r, d)``, :data:`LOOKUP_KEYS` bound (rule, dedup key) pairs; ``k``
    drives the join (SQLite keeps a CROSS JOIN's order), each key a search of alerts_rule_key."""
    return f"WITH k(r, d) AS (VALUES {', '.join(['(?, ?)'] * LOOKUP_KEYS)}) {select}"


_ACTIVE_OF_KEYS = _of_keys(
    "SELECT a.rule_id, a.dedup_key, a.id, a.evidence, a.first_seen, a.last_seen FROM k CROSS JOIN alerts a "  # nosec # noqa: S608
    f"WHERE a.rule_id = k.r AND a.dedup_key = k.d AND a.status IN ({', '.join('?' * len(ACTIVE))}) "
    "ORDER BY a.seq"  # placeholders only
)
_ALERTS_OF_KEYS = _of_keys(
    "SELECT r, d, (SELECT count(*) FROM alerts a WHERE a.rule_id = k.r AND a.dedup_key = k.d) FROM k"
)
_ALERT_COLUMNS = (
    "id, rule_id, rule_version, severity, audience, status, customer_id, dedup_key, labels, "
    "title, summary, evidence, first_seen, last_seen, created_at, updated_at, count, assignee"
)


class SqlStore(AlertRepository, PipelineStore, ABC):
    """The repositories over :meth:`conn`; a subclass brings the engine (SQLite, PostgreSQL).

    It is the :class:`~ringfence.alerts.ports.AlertRepository` and the dispatcher's
    :class:`~ringfence.alerts.ports.PipelineStore`; silences and the notification log are
    :mod:`.silences` and :mod:`.notifications` over it."""

    def __init__(self, audit_key: bytes | None = None) -> None:
        self.audit_key = audit_key
        self._pruned_minute: int | None = None
        self.states = StateLog()

    @abstractmethod
    def conn(self) -> Connection:
        """This thread's connection (autocommit; use :meth:`transaction` to write)."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Connection]:
        """A write transaction on this thread's connection, committed on success."""

    @abstractmethod
    def close(self) -> None:
        """Release this thread's connection (and, for a pool, nothing else)."""

    # -- processor side ----------------------------------------------------------------

    def load_checkpoint(self, name: str) -> tuple[int, dict[int, float]]:
        """The committed offset of processor ``name`` and its partitions' max event times."""
        conn = self.conn()
        row = conn.execute("SELECT offset FROM processor_offsets WHERE name = ?", (name,)).fetchone()
        marks = dict(conn.execute("SELECT partition, max_event_time FROM watermarks"))
        return (int(row[0]) if row else 0), marks

    def snapshot_all(self, engine: SnapshotSource) -> None:
        """Write a whole snapshot of ``engine`` now (after a pack reload)."""
        with self.transaction() as conn:
            part = self.states.write_all(conn, engine)
        self.states.committed(0, 0, part)

    def snapshot_step(self, engine: SnapshotSource) -> bool:
        """The processor is idle: write a part of the state snapshot if one is due, and delete
        some retired rows if any are left; True if it did either."""
        part = self.states.next_part(engine, 0, idle=True)
        if part is None and not self.states.sweeping:
            return False
        with self.transaction() as conn:
            self.states.write(conn, [], part)
        self.states.committed(0, 0, part)
        return True

    def restore_state(self, engine: SnapshotSource) -> int:
        """Load the checkpointed engine state into ``engine``; return how many rows were applied
        (see :mod:`ringfence.store.state_log`)."""
        return self.states.load(self.conn(), engine)

    def commit_batch(
        self, signals: list[AlertSignal], checkpoint: Checkpoint, now: float
    ) -> list[tuple[str, AlertSignal]]:
        """Apply ``signals`` and ``checkpoint`` atomically; return the alerts created (id, signal)."""
        created: list[tuple[str, AlertSignal]] = []
        with self.transaction() as conn:  # one writer at a time (PostgreSQL: the advisory lock)
            if checkpoint.after is not None:
                row = conn.execute("SELECT offset FROM processor_offsets WHERE name = ?", (checkpoint.name,)).fetchone()
                if row is not None and int(row[0]) > checkpoint.after:
                    raise StaleBatch(checkpoint.name, int(row[0]))
            hit = _BatchHits(now)
            self._look_up(conn, hit, {(s.rule_id, s.dedup_key) for s in signals if s.mode != "shadow"})
            for signal in signals:
                decision, aid = self._apply_signal(conn, signal, hit)
                if decision is Decision.CREATED:
                    created.append((aid, signal))
                if decision is not Decision.SHADOW:  # the dispatcher's outbox, committed with the alert
                    announce(conn, aid, AlertChange.FIRING, now)
            self._write_hits(conn, hit)
            state_seq = self.states.write(conn, checkpoint.state_changes, checkpoint.snapshot)
            conn.executemany("INSERT OR REPLACE INTO watermarks VALUES (?, ?)", list(checkpoint.watermarks.items()))
            conn.executemany(
                "INSERT OR IGNORE INTO late_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (e.offset, e.event_id, e.source, e.type, e.customer_id, e.occurred_at, e.watermark, e.ingested_at)
                    for e in checkpoint.late_events
                ],
            )
            conn.execute("INSERT OR REPLACE INTO processor_offsets VALUES (?, ?)", (checkpoint.name, checkpoint.offset))
            quarantine.write(conn, checkpoint.quarantined, checkpoint.redriven, now)
        self.states.committed(checkpoint.state_rows, state_seq, checkpoint.snapshot)
        return created

    @staticmethod
    def _look_up(conn: Connection, hit: _BatchHits, keys: set[tuple[str, str]]) -> None:
        """Each (rule, dedup key) the batch hits: its active alert, else how many alerts it had
        (the next one's occurrence). Two queries a chunk of keys, not two a key: late in a paced
        run, when the simulator's windows fill, those were the processor's largest cost in the
        store (``py-spy``: the dedup query's line alone 8 % of the process's samples)."""
        ordered = sorted(keys)
        for start in range(0, len(ordered), LOOKUP_KEYS):
            chunk = ordered[start : start + LOOKUP_KEYS]
            for rule_id, dedup_key, aid, evidence, first_seen, last_seen in conn.execute(
                _ACTIVE_OF_KEYS, [*_padded(chunk), *ACTIVE]
            ):  # by seq: the newest active alert of a key wins
                hit.alerts[(rule_id, dedup_key)] = _Active(aid, msgspec.json.decode(evidence), first_seen, last_seen)
            missing = [key for key in chunk if key not in hit.alerts]
            if missing:
                counts = conn.execute(_ALERTS_OF_KEYS, _padded(missing))
                hit.alerts_of.update(((r, d), n) for r, d, n in counts if r is not None)

    def _apply_signal(self, conn: Connection, s: AlertSignal, hit: _BatchHits) -> tuple[Decision, str]:
        """Deduplicate ``s`` into its active alert, or create one. The active alerts a batch
        hits are kept in ``hit`` (looked up by :meth:`_look_up`) and written once each by
        :meth:`_write_hits`, however many times the batch hit them."""
        hit.rules[(s.rule_id, s.mode)] += 1
        if s.mode == "shadow":
            return Decision.SHADOW, ""
        key = (s.rule_id, s.dedup_key)
        active = hit.alerts.get(key)
        if active is not None:
            active.another(s)
            return Decision.DEDUPLICATED, active.id
        occurrence = 1 + hit.alerts_of.get(key, 0)
        aid = alert_id(s.rule_id, s.dedup_key, occurrence)
        evidence = _json.encode(lifecycle.new_evidence(s))
        conn.execute(
            "INSERT INTO alerts (id, rule_id, rule_version, severity, audience, status, customer_id, "
            "dedup_key, occurrence, labels, title, summary, evidence, first_seen, last_seen, created_at, "
            "updated_at, count, assignee) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, NULL)",
            (
                aid,
                s.rule_id,
                s.rule_version,
                s.severity,
                s.audience,
                AlertStatus.OPEN,
                s.customer_id,
                s.dedup_key,
                occurrence,
                _json.encode(s.labels).decode(),
                s.title,
                s.summary,
                evidence.decode(),
                s.occurred_at,
                s.occurred_at,
                hit.now,
                hit.now,
            ),
        )
        hit.alerts[key] = _Active(aid, msgspec.json.decode(evidence), s.occurred_at, s.occurred_at)
        reason = f"rule {s.rule_id} matched event {s.event_id}"
        add_history(conn, aid, hit.now, SYSTEM_ACTOR, Decision.CREATED, reason, None, AlertStatus.OPEN)
        return Decision.CREATED, aid

    def _write_hits(self, conn: Connection, hit: _BatchHits) -> None:
        """The batch's hits: each active alert hit again, and the rules' hit counts."""
        conn.executemany(
            "UPDATE alerts SET count=count+?, first_seen=?, last_seen=?, evidence=?, updated_at=?, "
            "title=?, summary=? WHERE id=?",
            [active.update(hit.now) for active in hit.alerts.values() if active.hits],
        )
        conn.executemany(
            "INSERT INTO rule_hits VALUES (?, ?, ?) "
            "ON CONFLICT (rule_id, mode) DO UPDATE SET hits = rule_hits.hits + excluded.hits",
            [(rule_id, mode, n) for (rule_id, mode), n in hit.rules.items()],
        )
        minute = int(hit.now // 60)
        conn.executemany(
            "INSERT INTO rule_hits_by_minute VALUES (?, ?, ?, ?) "
            "ON CONFLICT (rule_id, mode, minute) DO UPDATE SET hits = rule_hits_by_minute.hits + excluded.hits",
            [(rule_id, mode, minute, n) for (rule_id, mode), n in hit.rules.items()],
        )
        if hit.rules and minute != self._pruned_minute:  # once a minute keeps the table bounded
            self._pruned_minute = minute
            conn.execute("DELETE FROM rule_hits_by_minute WHERE minute < ?", (minute - RULE_HITS_KEPT_MINUTES,))

    # -- API side ------------------------------------------------------------------------

    def list_alerts(self, query: AlertQuery) -> tuple[list[Alert], str | None]:
        """One page of alerts, newest first, and the cursor of the next page (or None). Its
        alerts carry no history and no comments (both grow without end, an analyst's notes of
        4,000 characters each: a page of 500 could pass 200 MB); :meth:`get_alert` has them.

        A page looks at no more than :data:`SCAN_ALERTS` alerts below its cursor: those next in
        seq, or a customer's next in its index (the first page, twice that at most: below). It
        may then hold fewer than ``limit``, even none, with a cursor to go on from. Filters that
        match nothing made each request read every alert (0.2 s at 500,000), and a key's 64 of
        them at once held every other reader 13 s (a pen test); a customer's 250,000 alerts, 4 s
        (a re-test). Its cursor tells no seq of an alert (:mod:`ringfence.store.alert_cursors`)."""
        where, args = _alert_filters(query, windowed=True)
        conn = self.conn()
        below = alert_cursors.below(conn, query.cursor, query.audience, SCAN_ALERTS)
        if below is not None:
            where.append("seq < ?")
            args.append(below)
        if query.customer_id is not None:  # its index: the window is its next alerts
            floor = conn.execute(
                "SELECT MIN(seq), COUNT(*) FROM (SELECT seq FROM alerts WHERE customer_id = ? AND seq < ? "
                "ORDER BY seq DESC LIMIT ?) AS scanned",
                (query.customer_id, below if below is not None else 2**62, SCAN_ALERTS),
            ).fetchone()
            looked = int(floor[1])
            floor = int(floor[0]) if looked else 0
            more = looked == SCAN_ALERTS
            if more:  # up to a multiple of SCAN_ALERTS, still below the cursor (its SCAN_ALERTS
                # alerts span as many seqs): the floor, a cursor, tells no alert's seq (a review)
                floor = -(-floor // SCAN_ALERTS) * SCAN_ALERTS
        else:
            if below is None:
                # the first window ends at the multiple of SCAN_ALERTS above the newest alert and
                # spans two: a cursor the page gives out for going on past it tells a key limited to
                # some audiences how many alerts every audience has only to the nearest SCAN_ALERTS
                # (it was the newest seq less SCAN_ALERTS: the count, live, in a hostile test)
                newest = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM alerts").fetchone()[0])
                below = (newest // SCAN_ALERTS + 1) * SCAN_ALERTS
                floor = below - 2 * SCAN_ALERTS
            else:  # down to the multiple of SCAN_ALERTS below: the floor, a cursor, tells no alert's seq
                floor = (below - 1) // SCAN_ALERTS * SCAN_ALERTS
            oldest = conn.execute("SELECT MIN(seq) FROM alerts").fetchone()[0]
            more = oldest is not None and int(oldest) < floor
        where.append("seq >= ?")
        args.append(floor)
        sql = f"SELECT seq, {_ALERT_COLUMNS} FROM alerts WHERE "  # nosec # noqa: S608 - constant columns
        sql += " AND ".join(where) + " ORDER BY seq DESC LIMIT ?"  # clauses are constants, values bound
        rows = conn.execute(sql, [*args, query.limit + 1]).fetchall()
        next_cursor = None
        if len(rows) > query.limit:
            rows = rows[: query.limit]
            next_cursor = alert_cursors.naming(int(rows[-1][0]), rows[-1][1], SCAN_ALERTS)
        elif more:  # the window ran out before the page filled
            next_cursor = str(floor)
        return [self._alert(row[1:], [], 0) for row in rows], next_cursor

    def get_alert(self, alert_id: str) -> Alert:
        """An alert with its newest :data:`~ringfence.alerts.model.SHOWN_ENTRIES` history
        entries and comments, oldest first, and how many older ones it has."""
        conn = self.conn()
        row = conn.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?",  # nosec # noqa: S608 - constant columns
            (alert_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no alert {alert_id!r}")
        entries, history_omitted = _newest(
            conn, alert_id, "alert_history", "actor, action, reason, from_status, to_status"
        )
        notes, comments_omitted = _newest(conn, alert_id, "alert_comments", "author, text")
        alert = self._alert(row, [HistoryEntry(iso(at), *rest) for at, *rest in entries], history_omitted)
        alert.comments = [Comment(at=iso(at), author=author, text=text) for at, author, text in notes]
        alert.comments_omitted = comments_omitted
        return alert

    def _alert(self, row: tuple[Any, ...], history: list[HistoryEntry], history_omitted: int) -> Alert:
        return Alert(
            id=row[0],
            rule_id=row[1],
            rule_version=row[2],
            severity=row[3],
            audience=row[4],
            status=row[5],
            customer_id=row[6],
            dedup_key=row[7],
            labels=msgspec.json.decode(row[8]),
            title=row[9],
            summary=row[10],
            evidence=msgspec.json.decode(row[11]),
            first_seen=iso(row[12]),
            last_seen=iso(row[13]),
            created_at=iso(row[14]),
            updated_at=iso(row[15]),
            count=row[16],
            assignee=row[17],
            history=history,
            history_omitted=history_omitted,
        )

    def transition(self, alert_id: str, action: Action, actor: str, reason: str, now: float) -> Alert:
        """Acknowledge or resolve an alert, recording who and why (history and audit); Conflict
        if its status does not allow it (see :func:`~ringfence.alerts.lifecycle.transition`)."""
        with self.transaction() as conn:
            now = audit_chain.change_time(conn, now)
            row = conn.execute("SELECT status FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            if row is None:
                raise NotFound(f"no alert {alert_id!r}")
            to_status = lifecycle.transition(action, row[0])
            if to_status is not None:
                conn.execute("UPDATE alerts SET status=?, updated_at=? WHERE id=?", (to_status, now, alert_id))
                add_history(conn, alert_id, now, actor, action, reason, row[0], to_status)
                self.audit(conn, now, actor, f"alert.{action.value}", alert_id, {"reason": reason})
                announce(conn, alert_id, AlertChange(to_status.value), now)
        return self.get_alert(alert_id)

    def assign(self, alert_id: str, assignee: str, actor: str, reason: str, now: float) -> Alert:
        """Give an alert to someone (or to no one, with an empty ``assignee``), recorded and audited."""
        with self.transaction() as conn:
            now = audit_chain.change_time(conn, now)
            row = conn.execute("SELECT assignee FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            if row is None:
                raise NotFound(f"no alert {alert_id!r}")
            conn.execute("UPDATE alerts SET assignee=?, updated_at=? WHERE id=?", (assignee or None, now, alert_id))
            why = f"assigned to {assignee}" if assignee else "unassigned"
            add_history(conn, alert_id, now, actor, "assign", f"{why}{': ' + reason if reason else ''}")
            self.audit(conn, now, actor, "alert.assign", alert_id, {"assignee": assignee, "previous": row[0]})
        return self.get_alert(alert_id)

    def comment(self, alert_id: str, text: str, actor: str, now: float) -> Alert:
        with self.transaction() as conn:
            now = audit_chain.change_time(conn, now)
            if conn.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone() is None:
                raise NotFound(f"no alert {alert_id!r}")
            held = conn.execute("SELECT count(*) FROM alert_comments WHERE alert_id = ?", (alert_id,)).fetchone()[0]
            if held >= MAX_COMMENTS:  # counted in the transaction: two at 999 must not both add one
                raise RequestError(409, "too_many_comments", f"the alert has {MAX_COMMENTS} comments, the most kept")
            conn.execute("INSERT INTO alert_comments VALUES (?, ?, ?, ?)", (alert_id, now, actor, text))
            self.audit(conn, now, actor, "alert.comment", alert_id, {"chars": len(text)})
        return self.get_alert(alert_id)

    # -- the dispatcher's side -------------------------------------------------------------

    @contextmanager
    def pipeline(self) -> Iterator[SqlPipeline]:
        with self.transaction() as conn:
            yield SqlPipeline(conn)

    def due_notifications(
        self, now: float, limit: int, *, receivers: Sequence[str] = (), each: int = 0
    ) -> list[Notification]:
        return notifications.due(self.conn(), now, limit, receivers, each)

    def audit(self, conn: Connection, now: float, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        """Append one entry to the hash-chained audit trail inside the caller's transaction."""
        audit_chain.append(conn, self.audit_key, now, actor, action, target, _json.encode(detail).decode())

    def verify_audit(self) -> audit_chain.Verdict:
        """Check the audit trail's chain: see :mod:`ringfence.store.audit`."""
        return audit_chain.verify(self.conn(), self.audit_key)

    def list_audit(self, limit: int = 100, cursor: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        rows = (
            self.conn()
            .execute(
                "SELECT seq, at, actor, action, target, detail FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                (cursor if cursor is not None else 2**62, limit + 1),
            )
            .fetchall()
        )
        items = [
            {"seq": s, "at": iso(at), "actor": a, "action": act, "target": t, "detail": msgspec.json.decode(d)}
            for s, at, a, act, t, d in rows[:limit]
        ]
        return items, (rows[limit - 1][0] if len(rows) > limit else None)

    def list_late_events(self, limit: int = 100, cursor: int | None = None) -> tuple[list[LateEvent], int | None]:
        rows = (
            self.conn()
            .execute(
                "SELECT * FROM late_events WHERE offset < ? ORDER BY offset DESC LIMIT ?",
                (cursor if cursor is not None else 2**62, limit + 1),
            )
            .fetchall()
        )
        items = [LateEvent(*r) for r in rows[:limit]]
        return items, (rows[limit - 1][0] if len(rows) > limit else None)

    def forget_late_events(self, ingested_before: float, limit: int) -> int:
        """Delete up to ``limit`` late events ingested before ``ingested_before``; how many. (The
        kafka runtime's: its offsets do not follow ingestion across partitions, as
        :func:`~ringfence.store.retention.delete_oldest` needs; PostgreSQL indexes the time.)"""
        cur = self.conn().execute(
            "DELETE FROM late_events WHERE offset IN (SELECT offset FROM late_events WHERE ingested_at < ? LIMIT ?)",
            (ingested_before, limit),
        )
        return int(cur.rowcount)

    def count_late_events(self) -> int:
        return int(self.conn().execute("SELECT count(*) FROM late_events").fetchone()[0])

    def rule_hits(self, since: float | None = None) -> dict[str, dict[str, int]]:
        """Hits per rule and mode: all of them, or those counted at or after ``since``
        (to the minute; counts older than two days are not kept)."""
        out: dict[str, dict[str, int]] = {}
        if since is None:
            rows = self.conn().execute("SELECT rule_id, mode, hits FROM rule_hits")
        else:
            rows = self.conn().execute(
                "SELECT rule_id, mode, sum(hits) FROM rule_hits_by_minute WHERE minute >= ? GROUP BY rule_id, mode",
                (int(since // 60),),
            )
        for rule_id, mode, hits in rows:
            out.setdefault(rule_id, {})[mode] = int(hits)
        return out

    def count_alerts_by(self, query: AlertQuery) -> dict[str, dict[str, int]]:
        """Alerts matching ``query`` (limit and cursor ignored), counted by severity and by status."""
        where, args = _alert_filters(query)
        sql = "SELECT severity, status, count(*) FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)  # clauses are constants, values are bound
        counts: dict[str, dict[str, int]] = {"severity": {}, "status": {}}
        for severity, status, n in self.conn().execute(sql + " GROUP BY severity, status", args):
            counts["severity"][severity] = counts["severity"].get(severity, 0) + n
            counts["status"][status] = counts["status"].get(status, 0) + n
        return counts

    def count_alerts(self) -> int:
        return int(self.conn().execute("SELECT count(*) FROM alerts").fetchone()[0])


def _newest(conn: Connection, alert_id: str, table: str, columns: str) -> tuple[list[tuple[Any, ...]], int]:
    """The newest :data:`~ringfence.alerts.model.SHOWN_ENTRIES` rows of ``table`` (``at`` and
    ``columns``) of an alert, oldest first, and how many older rows it has: read newest first on
    the (alert_id, at) index, so an alert with thousands of comments costs its newest ones only
    (and a count of the index's entries)."""
    newest = conn.execute(  # table and columns are the constants of get_alert
        f"SELECT at, {columns} FROM {table} WHERE alert_id = ? ORDER BY at DESC, rowid DESC LIMIT ?",  # nosec # noqa: S608
        (alert_id, SHOWN_ENTRIES),
    ).fetchall()
    if len(newest) < SHOWN_ENTRIES:
        return [tuple(r) for r in reversed(newest)], 0
    held = conn.execute(f"SELECT count(*) FROM {table} WHERE alert_id = ?", (alert_id,)).fetchone()[0]  # nosec # noqa: S608
    return [tuple(r) for r in reversed(newest)], int(held) - len(newest)


def _alert_filters(query: AlertQuery, *, windowed: bool = False) -> tuple[list[str], list[Any]]:
    """The WHERE clauses (constants with placeholders) and bound values of an alert query's
    filters (its cursor is the page's: :meth:`SqlStore.list_alerts`). ``windowed``: for a page,
    which reads a window of seqs: a rule's index would read every alert of the rule and sort
    them (100,200 steps against 500 for a window of 100 among 20,000 alerts: a review), so the
    rule is compared as an expression no index serves."""
    where: list[str] = []
    args: list[Any] = []
    for column, values in (("status", query.status), ("severity", query.severity), ("audience", query.audience)):
        if values:
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            args.extend(values)
    rule = "rule_id || '' = ?" if windowed else "rule_id = ?"
    for clause, value in ((rule, query.rule_id), ("customer_id = ?", query.customer_id)):
        if value is not None:
            where.append(clause)
            args.append(value)
    if query.since is not None:
        where.append("last_seen >= ?")
        args.append(query.since)
    if query.until is not None:
        where.append("first_seen < ?")
        args.append(query.until)
    return where, args


def _padded(keys: list[tuple[str, str]]) -> list[str | None]:
    """The parameters of :data:`LOOKUP_KEYS` keys: ``keys``, then NULLs, which match no alert
    (one statement text whatever the count, so PostgreSQL's translation cache keeps one)."""
    padded: list[str | None] = [value for key in keys for value in key]
    return padded + [None] * (2 * (LOOKUP_KEYS - len(keys)))


@dataclass
class _Active:
    """An active alert a batch hit: its row as the batch leaves it, and the hits it took."""

    id: str
    evidence: dict[str, Any]
    first_seen: float
    last_seen: float
    title: str = ""
    summary: str = ""
    hits: int = 0

    def another(self, signal: AlertSignal) -> None:
        hit = lifecycle.another_hit(self.first_seen, self.last_seen, signal)
        self.first_seen, self.last_seen, self.title, self.summary = (
            hit.first_seen,
            hit.last_seen,
            hit.title,
            hit.summary,
        )
        self.evidence = lifecycle.merge_evidence(self.evidence, signal)
        self.hits += 1

    def update(self, now: float) -> tuple[Any, ...]:
        """The parameters of the ``UPDATE`` that writes the hits."""
        evidence = _json.encode(self.evidence).decode()
        return (self.hits, self.first_seen, self.last_seen, evidence, now, self.title, self.summary, self.id)


@dataclass
class _BatchHits:
    """What a batch's signals did, written at its end: active alerts by (rule, dedup key),
    and hits by (rule, mode)."""

    now: float
    alerts: dict[tuple[str, str], _Active] = field(default_factory=dict)
    alerts_of: dict[tuple[str, str], int] = field(default_factory=dict)  # alerts a key had, if none is active
    rules: Counter[tuple[str, str]] = field(default_factory=Counter)
