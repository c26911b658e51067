"""Engine state in DynamoDB: one item per (state name, key), versioned.

A processor invocation loads the rows its events may touch, runs the engine, and commits
in one ``TransactWriteItems``: every changed row (conditional on the version it loaded), a
marker per event (conditional on not existing) and an outbox item with the batch's alert
signals. Either all of it lands or none does, so:

- a retried batch finds its events' markers and skips them: nothing is counted twice;
- of two invocations racing on the same rows, the second's conditions fail: it reloads and
  redoes its work on the winner's state, so the result equals one run in order.

Nothing shard-wide is in the transaction, so concurrent batches of one shard
(``ParallelizationFactor`` > 1) conflict only where they share rows. The shard's checkpoint
(its newest event time, the watermark's input) is advanced after a commit, never back.

Item layout (table key ``pk`` + ``sk``):

| item | pk | sk | attributes |
|---|---|---|---|
| state row | ``s|<name>|<key>`` | ``-`` | ``st`` state, ``v`` version, ``tp``/``d`` armed timer, ``ttl`` |
| event marker | ``e|<source>|<event id>`` | ``-`` | ``ttl``, ``late`` if it was behind the watermark |
| checkpoint | ``checkpoint`` | shard id | ``met`` max event time, ``at`` wall clock of that commit |
| outbox | ``outbox|<shard>`` | first ordinal | ``sig`` signals (msgpack) |

Timers live in the sparse index ``timers`` (``tp`` + ``d``), so due ones are one query.

A heartbeat (an absence with no ``after``: "no event from this source for 5 minutes") is one
row that every event of a busy source moves: written like the others, it would make every
concurrent commit conflict. Its state is a register whose newest deadline wins, so it is not
versioned: the commit puts the new deadline in the outbox, and applying the outbox writes it
only if it is later than the highest deadline the row ever had (``hi``); repeating that is
harmless. Only firing a heartbeat (which clears the deadline) is a versioned write.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ringfence.engine.engine import Engine
from ringfence.engine.rules import AlertSignal
from ringfence.events.model import Event
from ringfence.runtimes.aws.resources import cancellation_codes, error_code
from ringfence.store.base import LateEvent

StateKey = tuple[str, str]
MARKER_TTL_S = 8 * 86400.0  # longer than Kinesis keeps a record (7 days at most)
STATE_TTL_MARGIN_S = 86400.0  # a quiet row lives this long past its horizon
TIMERS_INDEX = "timers"
TIMER_PARTITION = "timer"
MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit for one TransactWriteItems

_outbox_encoder = msgspec.msgpack.Encoder()
_signals_decoder = msgspec.msgpack.Decoder(list[tuple[str, AlertSignal]])
_pushes_decoder = msgspec.msgpack.Decoder(list[tuple[str, str, bytes, float]])


class StateConflict(Exception):
    """The commit's conditions failed: another invocation changed the rows or processed events."""

    def __init__(self, codes: list[str]) -> None:
        super().__init__(f"transaction cancelled: {codes}")
        self.codes = codes


@dataclass
class ShardCheckpoint:
    """A shard's event-time progress: the watermark's input."""

    shard: str
    max_event_time: float | None = None
    at: float = 0.0  # wall clock of the commit that moved it


@dataclass(frozen=True)
class LoadedRow:
    """A state row as read: its state, version, armed deadline and highest deadline ever."""

    state: bytes
    version: int
    deadline: float | None = None
    high: float | None = None


@dataclass
class RowWrite:
    """A state row to write (``state`` None: delete), conditional on ``loaded_version``."""

    name: str
    key: str
    state: bytes | None
    loaded_version: int | None  # None: the row did not exist
    deadline: float | None = None
    expires_at: float | None = None
    high: float | None = None  # a heartbeat's highest deadline, kept through a versioned write


@dataclass(frozen=True)
class DeadlinePush:
    """A heartbeat's newer deadline, applied after the commit if still the newest."""

    name: str
    key: str
    state: bytes
    deadline: float


@dataclass
class Commit:
    """One atomic commit of a processor invocation (``source``: its shard, or the tick)."""

    source: str
    outbox_key: str  # unique among the source's commits
    rows: list[RowWrite] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # event keys: a marker each
    outbox: list[tuple[str, AlertSignal]] = field(default_factory=list)  # (ordinal, signal)
    pushes: list[DeadlinePush] = field(default_factory=list)
    late: set[str] = field(default_factory=set)  # event keys of events behind the watermark
    max_event_time: float | None = None  # the newest event time of the source's events in it

    @property
    def has_outbox(self) -> bool:
        return bool(self.outbox or self.pushes)

    @property
    def items(self) -> int:
        return len(self.rows) + len(self.events) + (1 if self.has_outbox else 0)


@dataclass
class Outbox:
    """What a commit left to apply: alert signals and heartbeat deadlines."""

    key: str
    signals: list[tuple[str, AlertSignal]]
    pushes: list[DeadlinePush]


def writes_of(
    engine: Engine, loaded: dict[StateKey, LoadedRow], now: float
) -> tuple[list[RowWrite], list[DeadlinePush]]:
    """The engine's changes since it was restored from ``loaded``: versioned row writes, and
    the heartbeat deadlines to push through the outbox."""
    rows: list[RowWrite] = []
    pushes: list[DeadlinePush] = []
    watermark = engine.watermark()
    for name, key, encoded in engine.take_changes():
        row = loaded.get((name, key))
        if engine.is_heartbeat(name):
            deadline = engine.timer_of(name, key)
            old = row.deadline if row is not None else None
            fired = old is not None and old < watermark  # came due since it was loaded: the engine fired it
            if deadline == old and not fired:
                continue  # only the time last seen moved: nothing worth a write
            if deadline is not None and encoded is not None and not fired:
                pushes.append(DeadlinePush(name, key, encoded, deadline))  # newest wins, no version
                continue
        if encoded is None and (row is None or not row.version):
            continue
        horizon = engine.horizon_of(name)
        rows.append(
            RowWrite(
                name,
                key,
                encoded,
                row.version if row is not None and row.version else None,
                deadline=engine.timer_of(name, key),
                expires_at=now + horizon + STATE_TTL_MARGIN_S if horizon is not None else None,
                high=row.high if row is not None else None,
            )
        )
    return rows, pushes


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(float(value)) if isinstance(value, float) else str(value)}


def _row_pk(name: str, key: str) -> str:
    return f"s|{name}|{key}"


def event_key(event: Event | LateEvent) -> str:
    """An event's identity, as the embedded journal's: its ``event_id`` is unique per source
    (a source has no ``|``)."""
    return f"{event.source}|{event.event_id}"


def _marker_pk(event: str) -> str:
    return f"e|{event}"


class StateTable:
    """The processor's view of the state table."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self.db = dynamodb
        self.table = table

    # -- reading -------------------------------------------------------------------------------

    def _batch_get(self, pks: list[str], attributes: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(pks), 100):
            keys: list[dict[str, Any]] = [{"pk": _s(pk), "sk": _s("-")} for pk in pks[start : start + 100]]
            request: dict[str, Any] = {
                self.table: {"Keys": keys, "ConsistentRead": True, "ProjectionExpression": attributes}
            }
            delay = 0.05
            while request:
                reply = self.db.batch_get_item(RequestItems=request)
                for item in reply.get("Responses", {}).get(self.table, []):
                    found[item["pk"]["S"]] = item
                request = reply.get("UnprocessedKeys") or {}
                if request:  # throttled: back off, then ask for the rest
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
        return found

    def load(self, rows: Iterable[StateKey]) -> dict[StateKey, LoadedRow]:
        """Each of ``rows`` that exists, as stored. A row read while another writer's transaction
        was half applied (a local endpoint's transactions are not isolated from reads) counts as
        absent: the versioned commit then conflicts, and the chunk is run again on a fresh read."""
        wanted = {_row_pk(name, key): (name, key) for name, key in rows}
        items = self._batch_get(list(wanted), "pk, st, v, d, hi")
        return {
            wanted[pk]: LoadedRow(
                bytes(item["st"]["B"]),
                int(item["v"]["N"]),
                float(item["d"]["N"]) if "d" in item else None,
                float(item["hi"]["N"]) if "hi" in item else None,
            )
            for pk, item in items.items()
            if "st" in item and "v" in item
        }

    def processed(self, events: Iterable[str]) -> set[str]:
        """Which of ``events`` (event keys) a committed batch already processed."""
        ids = {_marker_pk(e): e for e in events}
        return {ids[pk] for pk in self._batch_get(list(ids), "pk")}

    def checkpoints(self) -> dict[str, ShardCheckpoint]:
        """Every shard's checkpoint (their max event times make the global watermark)."""
        out: dict[str, ShardCheckpoint] = {}
        for item in self._query({"pk": "checkpoint"}):
            shard = item["sk"]["S"]
            out[shard] = ShardCheckpoint(
                shard, float(item["met"]["N"]) if "met" in item else None, float(item.get("at", {}).get("N", 0))
            )
        return out

    def due_timers(self, watermark: float, limit: int) -> list[tuple[float, StateKey]]:
        """State rows whose armed absence deadline is before ``watermark``, earliest first."""
        rows: list[tuple[float, StateKey]] = []
        if limit <= 0:
            return rows
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": TIMERS_INDEX,
            "KeyConditionExpression": "tp = :tp AND d < :w",
            "ExpressionAttributeValues": {":tp": _s(TIMER_PARTITION), ":w": _n(watermark)},
            "Limit": limit,
        }
        reply = self.db.query(**kwargs)
        for item in reply.get("Items", []):
            _, name, key = item["pk"]["S"].split("|", 2)
            rows.append((float(item["d"]["N"]), (name, key)))
        return rows[:limit]

    def _query(self, equals: dict[str, str]) -> Iterable[dict[str, Any]]:
        ((attr, value),) = equals.items()
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": f"{attr} = :v",
            "ExpressionAttributeValues": {":v": _s(value)},
            "ConsistentRead": True,
        }
        while True:
            reply = self.db.query(**kwargs)
            yield from reply.get("Items", [])
            if "LastEvaluatedKey" not in reply:
                return
            kwargs["ExclusiveStartKey"] = reply["LastEvaluatedKey"]

    # -- the outbox ------------------------------------------------------------------------------

    def outbox(self, source: str) -> list[Outbox]:
        """What ``source``'s commits left to apply and is not applied yet, oldest first."""
        return [
            Outbox(
                item["sk"]["S"],
                _signals_decoder.decode(bytes(item["sig"]["B"])),
                [DeadlinePush(*p) for p in _pushes_decoder.decode(bytes(item["push"]["B"]))],
            )
            for item in self._query({"pk": f"outbox|{source}"})
        ]

    def apply_push(self, push: DeadlinePush) -> bool:
        """Write a heartbeat's deadline if it is the newest the row has had; False if not."""
        try:
            self.db.update_item(
                TableName=self.table,
                Key={"pk": _s(_row_pk(push.name, push.key)), "sk": _s("-")},
                UpdateExpression="SET st = :st, d = :d, hi = :d, tp = :tp, v = if_not_exists(v, :zero) + :one "
                "REMOVE #ttl",
                ConditionExpression="attribute_not_exists(hi) OR hi < :d",
                ExpressionAttributeNames={"#ttl": "ttl"},
                ExpressionAttributeValues={
                    ":st": {"B": push.state},
                    ":d": _n(push.deadline),
                    ":tp": _s(TIMER_PARTITION),
                    ":zero": _n(0),
                    ":one": _n(1),
                },
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def drop_outbox(self, shard: str, sort_key: str) -> None:
        self.db.delete_item(TableName=self.table, Key={"pk": _s(f"outbox|{shard}"), "sk": _s(sort_key)})

    # -- committing --------------------------------------------------------------------------------

    def commit(self, commit: Commit, now: float) -> None:
        """Write ``commit`` atomically, or raise StateConflict and write nothing."""
        if commit.items > MAX_TRANSACTION_ITEMS:
            raise ValueError(f"a commit of {commit.items} items is over DynamoDB's {MAX_TRANSACTION_ITEMS}")
        items = [self._row_write(row) for row in commit.rows if row.state is not None or row.loaded_version]
        for e in commit.events:
            marker: dict[str, Any] = {"pk": _s(_marker_pk(e)), "sk": _s("-"), "ttl": _n(int(now + MARKER_TTL_S))}
            if e in commit.late:
                marker["late"] = {"BOOL": True}
            items.append(
                {"Put": {"TableName": self.table, "Item": marker, "ConditionExpression": "attribute_not_exists(pk)"}}
            )
        if commit.has_outbox:
            pushes = [(p.name, p.key, p.state, p.deadline) for p in commit.pushes]
            items.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {
                            "pk": _s(f"outbox|{commit.source}"),
                            "sk": _s(commit.outbox_key),
                            "sig": {"B": _outbox_encoder.encode(commit.outbox)},
                            "push": {"B": _outbox_encoder.encode(pushes)},
                        },
                    }
                }
            )
        if not items:
            return
        try:
            self.db.transact_write_items(TransactItems=items)
        except Exception as exc:
            if error_code(exc) == "TransactionCanceledException":
                raise StateConflict(cancellation_codes(exc)) from exc
            raise

    def advance_checkpoint(self, shard: str, max_event_time: float, now: float) -> None:
        """After a commit: move the shard's newest event time forward (never back)."""
        try:
            self.db.update_item(
                TableName=self.table,
                Key={"pk": _s("checkpoint"), "sk": _s(shard)},
                UpdateExpression="SET met = :met, #at = :now",
                ConditionExpression="attribute_not_exists(met) OR met < :met",
                ExpressionAttributeNames={"#at": "at"},
                ExpressionAttributeValues={":met": _n(max_event_time), ":now": _n(now)},
            )
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    def _row_write(self, row: RowWrite) -> dict[str, Any]:
        key = {"pk": _s(_row_pk(row.name, row.key)), "sk": _s("-")}
        condition: dict[str, Any] = (
            {"ConditionExpression": "v = :v", "ExpressionAttributeValues": {":v": _n(row.loaded_version)}}
            if row.loaded_version
            else {"ConditionExpression": "attribute_not_exists(pk)"}
        )
        if row.state is None:
            return {"Delete": {"TableName": self.table, "Key": key, **condition}}
        item: dict[str, Any] = {**key, "st": {"B": row.state}, "v": _n((row.loaded_version or 0) + 1)}
        if row.deadline is not None:
            item["tp"] = _s(TIMER_PARTITION)
            item["d"] = _n(row.deadline)
        if row.expires_at is not None:
            item["ttl"] = _n(int(row.expires_at))
        if row.high is not None:
            item["hi"] = _n(row.high)
        return {"Put": {"TableName": self.table, "Item": item, **condition}}
