"""Engine state in DynamoDB: one item per key, holding every state of that key, versioned.

A processor invocation loads the items its events may touch, runs the engine, and commits
in one ``TransactWriteItems``: every changed item (conditional on the version it loaded),
the shard's progress (the sequence number of the last record committed, conditional on the
one it loaded) and an outbox item with the batch's alert signals. Either all of it lands or
none does, so:

- a retried batch skips the records up to its shard's progress: nothing is counted twice;
- of two invocations racing on the same items, or on the same shard's records (a zombie and
  the retry), the second's conditions fail: it reloads and redoes what is left of its work
  on the winner's state, so the result equals one run in order.

A producer's retried event (a new record) is found by the recent event ids its partition
key's item keeps (:mod:`.dedup`); that item is written with every chunk holding the key's
events. State is read strongly consistently: a chunk reads items it does not write (a
payee's, an address's), and no condition would catch a stale one. Nothing shard-wide but
the shard's own progress is in the transaction, so invocations of different shards
conflict only where they share keys (an address, a device). The shard's checkpoint (its
newest event time, the watermark's input) is advanced after a commit, never back.

Why an item a key: an event reads the states of 20-odd definitions but of only three or four
keys (its customer, card, device, address), and changes several states of one key at once;
a row a state made each of those a read and a transactional write of its own.

Item layout (table key ``pk`` + ``sk``):

| item | pk | sk | attributes |
|---|---|---|---|
| a key's states | ``k|<key>`` | ``-`` | ``st`` states (1), ``v`` version, ``tp``/``d`` timer, ``ttl``, ``ids`` (2) |
| heartbeat row | ``s|<name>|<key>`` | ``-`` | ``st`` state, ``v`` version, ``tp``/``d`` timer, ``hi`` latest deadline |
| progress | ``progress|<shard>`` | ``-`` | ``seq`` the last record committed (128 digits; ``tick``'s: stamp) |
| checkpoint | ``checkpoint`` | shard id | ``met`` max event time, ``at`` wall clock of that commit |
| outbox | ``outbox|<shard>`` | first ordinal | ``sig`` signals (msgpack) |

(1) ``{name: (state, armed deadline, expiry)}``, msgpack. (2) A partition key's recent event
ids (:mod:`.dedup`).

Timers live in the sparse index ``timers`` (``tp`` + ``d``), so due ones are one query. A
key's item is indexed by its earliest timer, and is written again when it comes due: then a
timer of a definition this code does not know leaves the index (no engine here fires it),
and a heartbeat's row of such a definition is taken out of it. A state past its expiry (its
window, ttl or pattern span since it last changed, plus a day) is left out when its item is
written again, as is one of a definition this code does not know written more than a day
before (until then another release may be running beside this one). An item whose states all
expired is deleted by DynamoDB's TTL.

A heartbeat (an absence with no ``after``: "no event from this source for 5 minutes") is one
row that every event of a busy source moves: written like the others, it would make every
concurrent commit conflict. Its state is a register whose newest deadline wins, so it is not
versioned and has a row of its own: the commit puts the new deadline in the outbox, and
applying the outbox writes it only if it is later than the highest deadline the row ever had
(``hi``); repeating that is harmless. Only firing a heartbeat (which clears the deadline) is a
versioned write.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ringfence.engine.engine import Engine, persisted_names
from ringfence.engine.pack import RulePack
from ringfence.engine.rules import AlertSignal
from ringfence.errors import StoreError
from ringfence.events.model import Event
from ringfence.runtimes.aws import dedup
from ringfence.runtimes.aws.resources import RETRY_CODES, batch_get, cancellation_codes, error_code
from ringfence.store.base import LateEvent

StateKey = tuple[str, str]
# a state in its key's item: state, armed deadline, expiry, when it was written
# (whole seconds for the two times: 5 bytes each in msgpack, not 9, in every write of the item)
StoredState = tuple[bytes, float | None, int | None, int]
STATE_TTL_MARGIN_S = 86400.0  # a quiet row lives this long past its horizon
OTHER_RELEASE_S = 86400.0  # a state of a definition this code does not know is kept this long
TIMERS_INDEX = "timers"
TIMER_PARTITION = "timer"
ANY_STATE = "*"  # the name a due timer of a key's item goes by: the item is read whole
MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit for one TransactWriteItems
MAX_STATES_BYTES = 390_000  # a key's states in one item: DynamoDB's limit is 400 KB an item, all told

_outbox_encoder = msgspec.msgpack.Encoder()
_signals_decoder = msgspec.msgpack.Decoder(list[tuple[str, AlertSignal]])
_pushes_decoder = msgspec.msgpack.Decoder(list[tuple[str, str, bytes, float]])
_states_encoder = msgspec.msgpack.Encoder()
_states_decoder = msgspec.msgpack.Decoder(dict[str, tuple[bytes, float | None, int | None, int]])


def heartbeat_names(pack: RulePack) -> frozenset[str]:
    """The state names of ``pack``'s heartbeats, which keep a row each (see the module's doc)."""
    names = persisted_names(pack)
    return frozenset(names[p.state_name] for p in pack.patterns if p.is_heartbeat)


class StateConflict(Exception):
    """The commit's conditions failed: another invocation changed the rows or processed events."""

    def __init__(self, codes: list[str]) -> None:
        super().__init__(f"transaction cancelled: {codes}")
        self.codes = codes


class ItemTooLarge(ValueError):
    """A key's states would not fit one DynamoDB item: the events that grew them are to blame,
    not DynamoDB, so the processor sets them aside rather than retrying its batch for ever."""

    def __init__(self, key: str, size: int) -> None:
        super().__init__(f"the states of key {key!r} would take {size:,} bytes, over {MAX_STATES_BYTES:,}")


@dataclass
class ShardCheckpoint:
    """A shard's event-time progress: the watermark's input."""

    shard: str
    max_event_time: float | None = None
    at: float = 0.0  # wall clock of the commit that moved it


@dataclass(frozen=True)
class LoadedRow:
    """A state as read: its state, version (its key's item's, or its heartbeat row's), armed
    deadline, highest deadline ever (a heartbeat's) and expiry (a state in a key's item)."""

    state: bytes
    version: int
    deadline: float | None = None
    high: float | None = None
    expires_at: float | None = None
    written_at: float = 0.0


@dataclass
class RowWrite:
    """A heartbeat's row to write (``state`` None: delete), conditional on ``loaded_version``."""

    name: str
    key: str
    state: bytes | None
    loaded_version: int | None  # None: the row did not exist
    deadline: float | None = None
    expires_at: float | None = None
    high: float | None = None  # a heartbeat's highest deadline, kept through a versioned write


@dataclass(frozen=True)
class KeyItem:
    """A key's item as read, beside its states: its version and the recent event ids it keeps."""

    version: int
    ids: bytes = b""


@dataclass
class Loaded:
    """What a load found: the states (a key's item's, or a heartbeat's row) and the keys' items."""

    rows: dict[StateKey, LoadedRow] = field(default_factory=dict)
    keys: dict[str, KeyItem] = field(default_factory=dict)


@dataclass
class ItemWrite:
    """A key's item to write with all its states and recent event ids (neither: delete it),
    conditional on ``loaded_version`` (None: the item did not exist); ``deadline``: the
    earliest timer it is indexed by."""

    key: str
    states: dict[str, StoredState]
    loaded_version: int | None
    deadline: float | None = None
    ids: bytes = b""


@dataclass(frozen=True)
class Progress:
    """A shard's progress a commit moves: from the last record committed when it loaded
    (``loaded``, None: none yet) to its own last (``last``), both as :func:`sequence_key`."""

    shard: str
    loaded: str | None
    last: str


def sequence_key(sequence: str) -> str:
    """A Kinesis sequence number (up to 128 digits) comparable as a string."""
    return f"{int(sequence):0128d}"


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
    progress: Progress | None = None  # the records (or the tick's stamp) it commits; None: an upgrade's
    outbox: list[tuple[str, AlertSignal]] = field(default_factory=list)  # (ordinal, signal)
    pushes: list[DeadlinePush] = field(default_factory=list)
    max_event_time: float | None = None  # the newest event time of the source's events in it
    keys: list[ItemWrite] = field(default_factory=list)  # the keys' items it writes

    @property
    def has_outbox(self) -> bool:
        return bool(self.outbox or self.pushes)

    @property
    def size(self) -> int:
        """Items in its transaction."""
        return len(self.keys) + len(self.rows) + (1 if self.progress else 0) + (1 if self.has_outbox else 0)


@dataclass
class Outbox:
    """What a commit left to apply: alert signals and heartbeat deadlines."""

    key: str
    signals: list[tuple[str, AlertSignal]]
    pushes: list[DeadlinePush]


def writes_of(
    engine: Engine,
    loaded: Loaded,
    now: float,
    due: Iterable[str] = (),
    ids: dict[str, bytes] | None = None,
) -> tuple[list[ItemWrite], list[RowWrite], list[DeadlinePush]]:
    """The engine's changes since it was restored from ``loaded``: the keys' items to write
    (versioned), the heartbeat rows to write (versioned), and the heartbeat deadlines to push
    through the outbox. The items of ``due`` keys (their timers came due) are written even
    unchanged, so a timer the engine did not fire leaves the index; so are those ``ids``
    gives new recent event ids (partition keys). An item keeps the ids it had otherwise."""
    rows: list[RowWrite] = []
    pushes: list[DeadlinePush] = []
    changed: dict[str, dict[str, bytes | None]] = {}
    watermark = engine.watermark()
    new_ids = ids or {}
    for name, key, encoded in engine.take_changes():
        if not engine.is_heartbeat(name):
            changed.setdefault(key, {})[name] = encoded
            continue
        row = loaded.rows.get((name, key))
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
                deadline=deadline,
                expires_at=now + horizon + STATE_TTL_MARGIN_S if horizon is not None else None,
                high=row.high if row is not None else None,
            )
        )
    for key in [*due, *new_ids]:
        changed.setdefault(key, {})
    held: dict[str, dict[str, LoadedRow]] = {}
    for (name, key), row in loaded.rows.items():
        if key in changed and not engine.is_heartbeat(name):
            held.setdefault(key, {})[name] = row
    items = [
        _item_write(engine, key, changes, held.get(key, {}), loaded.keys.get(key), new_ids.get(key), now)
        for key, changes in changed.items()
    ]
    return [i for i in items if i is not None], rows, pushes


def _item_write(
    engine: Engine,
    key: str,
    changes: dict[str, bytes | None],
    held: dict[str, LoadedRow],
    item: KeyItem | None,
    ids: bytes | None,
    now: float,
) -> ItemWrite | None:
    """``key``'s item with ``changes`` made to the states it ``held``. Left out: states past
    their expiry, and those of a definition this code does not know written more than
    :data:`OTHER_RELEASE_S` ago (kept until then: another release may be running beside
    this one). Indexed by the earliest timer it could fire, or another release's not yet due."""
    known = set(engine.persisted_names.values())
    states: dict[str, StoredState] = {
        name: (row.state, row.deadline, _seconds(row.expires_at), int(row.written_at))
        for name, row in held.items()
        if name not in changes
        and (row.expires_at is None or row.expires_at >= now)
        and (name in known or row.written_at >= now - OTHER_RELEASE_S)
    }
    for name, encoded in changes.items():
        if encoded is not None:
            horizon = engine.horizon_of(name)
            expires_at = now + horizon + STATE_TTL_MARGIN_S if horizon is not None else None
            states[name] = (encoded, engine.timer_of(name, key), _seconds(expires_at), int(now))
    version = item.version if item is not None else None
    kept = ids if ids is not None else (item.ids if item is not None else b"")
    if not states and not kept and version is None:
        return None  # made and dropped within the chunk: nothing was ever stored
    watermark = engine.watermark()
    armed = [
        deadline
        for name, (_, deadline, _, _) in states.items()
        if deadline is not None and (name in known or deadline > watermark)
    ]
    return ItemWrite(key, states, version, min(armed, default=None), kept)


def _seconds(at: float | None) -> int | None:
    return None if at is None else int(at)


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(float(value)) if isinstance(value, float) else str(value)}


def _row_pk(name: str, key: str) -> str:
    return f"s|{name}|{key}"


def _progress_pk(shard: str) -> str:
    """A shard's progress: an item of its own (a partition key each: every commit of the shard writes it)."""
    return f"progress|{shard}"


def _item_pk(key: str) -> str:
    return f"k|{key}"


def event_key(event: Event | LateEvent) -> str:
    """An event's identity, as the embedded journal's: its ``event_id`` is unique per source
    (a source has no ``|``)."""
    return f"{event.source}|{event.event_id}"


class StateTable:
    """The processor's view of the state table."""

    def __init__(self, dynamodb: Any, table: str, heartbeats: frozenset[str]) -> None:
        self.db = dynamodb
        self.table = table
        self.heartbeats = heartbeats  # state names kept in a row each (:func:`heartbeat_names`)

    # -- reading -------------------------------------------------------------------------------

    def _batch_get(self, pks: list[str], attributes: str, consistent: bool) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(pks), 100):
            keys: list[dict[str, Any]] = [{"pk": _s(pk), "sk": _s("-")} for pk in pks[start : start + 100]]
            request = {"Keys": keys, "ConsistentRead": consistent, "ProjectionExpression": attributes}
            for item in batch_get(self.db, self.table, request):
                found[item["pk"]["S"]] = item
        return found

    def load(self, rows: Iterable[StateKey]) -> Loaded:
        """Each of ``rows`` that exists, as stored, and every other state of their keys' items
        (a row named :data:`ANY_STATE` stands for its key's item), with those items' versions
        and recent event ids. An item read while another writer's transaction was half
        applied (a local endpoint's transactions are not isolated from reads) counts as
        absent: the versioned commit then conflicts, and the chunk is run again on a fresh read."""
        wanted: dict[str, StateKey | str] = {}
        for name, key in rows:
            if name in self.heartbeats:
                wanted[_row_pk(name, key)] = (name, key)
            else:
                wanted[_item_pk(key)] = key
        items = self._batch_get(list(wanted), "pk, st, v, d, hi, ids", consistent=True)
        loaded = Loaded()
        for pk, item in items.items():
            if "st" not in item or "v" not in item:
                continue
            version, row = int(item["v"]["N"]), wanted[pk]
            if isinstance(row, tuple):  # a heartbeat's row
                deadline = float(item["d"]["N"]) if "d" in item else None
                high = float(item["hi"]["N"]) if "hi" in item else None
                loaded.rows[row] = LoadedRow(bytes(item["st"]["B"]), version, deadline, high)
                continue
            loaded.keys[row] = KeyItem(version, bytes(item["ids"]["B"]) if "ids" in item else b"")
            for name, (state, deadline, expires_at, at) in _states_decoder.decode(bytes(item["st"]["B"])).items():
                loaded.rows[(name, row)] = LoadedRow(state, version, deadline, expires_at=expires_at, written_at=at)
        return loaded

    def seen(self, events: Iterable[tuple[str, str]], *, consistent: bool = False) -> set[str]:
        """Which of ``events`` ((partition key, event key) pairs) their partition keys' items
        keep among their recent event ids (:mod:`.dedup`): processed, within its window."""
        wanted = list(events)
        items = self._batch_get(sorted({_item_pk(key) for key, _ in wanted}), "pk, ids", consistent)
        kept = {pk: dedup.ids_of(bytes(item["ids"]["B"])) for pk, item in items.items() if "ids" in item}
        return {e for key, e in wanted if dedup.digest(e) in kept.get(_item_pk(key), {})}

    def marked_before_progress(self, events: Iterable[str]) -> set[str]:
        """Which of ``events`` (event keys) the code before the shards' progress items (before
        2026-12-04) marked processed: an item ``e|<event key>`` each, kept 8 days. A shard's
        first batch after the upgrade skips them (its progress starts there)."""
        ids = {f"e|{e}": e for e in events}
        return {ids[pk] for pk in self._batch_get(list(ids), "pk", consistent=True)}

    def progress(self, shard: str) -> str | None:
        """The last record of ``shard`` committed (:func:`sequence_key`), None if none yet."""
        item = self.db.get_item(
            TableName=self.table, Key={"pk": _s(_progress_pk(shard)), "sk": _s("-")}, ConsistentRead=True
        ).get("Item")
        return str(item["seq"]["S"]) if item and "seq" in item else None

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
            kind, rest = item["pk"]["S"].split("|", 1)
            name, key = (ANY_STATE, rest) if kind == "k" else rest.split("|", 1)
            if kind == "s" and name not in self.heartbeats:
                self._retire(name, key)  # a heartbeat no longer in the pack: no engine fires it
                continue
            rows.append((float(item["d"]["N"]), (name, key)))
        return rows[:limit]

    def _retire(self, name: str, key: str) -> None:
        """Take a heartbeat row of a definition no longer in the pack out of the timers index,
        and let it expire (a release that still has it may arm it again meanwhile)."""
        self.db.update_item(
            TableName=self.table,
            Key={"pk": _s(_row_pk(name, key)), "sk": _s("-")},
            UpdateExpression="REMOVE tp, d SET #ttl = :ttl",
            ExpressionAttributeNames={"#ttl": "ttl"},
            ExpressionAttributeValues={":ttl": _n(int(time.time() + OTHER_RELEASE_S))},
        )

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
        if commit.size > MAX_TRANSACTION_ITEMS:
            raise ValueError(f"a commit of {commit.size} items is over DynamoDB's {MAX_TRANSACTION_ITEMS}")
        items = [self._item_write(write, now) for write in commit.keys]
        items += [self._row_write(row) for row in commit.rows if row.state is not None or row.loaded_version]
        if commit.progress is not None:
            items.append(self._progress_write(commit.progress))
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
            # the token makes the SDK's own retry of a commit whose answer was lost succeed,
            # rather than fail on the conditions it met the first time
            self.db.transact_write_items(TransactItems=items, ClientRequestToken=uuid.uuid4().hex)
        except Exception as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            codes = cancellation_codes(exc)
            if set(codes) - RETRY_CODES:  # neither a race nor throttling: redoing the chunk would fail again
                raise StoreError(f"DynamoDB cancelled the commit: {codes}") from exc
            raise StateConflict(codes) from exc

    # -- upgrading ---------------------------------------------------------------------------------

    def migrate_rows(self, now: float) -> int:
        """Move the state rows of the layout before 2026-12-03 (a row a state, ``s|<name>|<key>``)
        into their keys' items, and delete them; heartbeat rows (this table's ``heartbeats``, or
        any row that ever had a pushed deadline) stay as they are. Run it with the processor
        and the tick stopped: where a state is in both, the item's is kept. Returns how many
        rows moved; safe to run again. It scans the whole table once, markers included."""
        moved: dict[str, dict[str, StoredState]] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(pk, :rows)",
            "ExpressionAttributeValues": {":rows": _s("s|")},
            "ProjectionExpression": "pk, st, d, #ttl, hi",
            "ExpressionAttributeNames": {"#ttl": "ttl"},
            "ConsistentRead": True,
        }
        while True:
            reply = self.db.scan(**kwargs)
            for item in reply.get("Items", []):
                _, name, key = item["pk"]["S"].split("|", 2)
                if name not in self.heartbeats and "hi" not in item and "st" in item:
                    deadline = float(item["d"]["N"]) if "d" in item else None
                    expires_at = float(item["ttl"]["N"]) if "ttl" in item else None
                    moved.setdefault(key, {})[name] = (bytes(item["st"]["B"]), deadline, _seconds(expires_at), int(now))
            if "LastEvaluatedKey" not in reply:
                break
            kwargs["ExclusiveStartKey"] = reply["LastEvaluatedKey"]
        for key, states in moved.items():
            rows = list(states)
            held = self.load([(name, key) for name in rows])
            item = held.keys.get(key)
            states.update(
                {
                    name: (row.state, row.deadline, _seconds(row.expires_at), int(row.written_at))
                    for (name, _), row in held.rows.items()
                }
            )
            deadline = min((d for _, d, _, _ in states.values() if d is not None), default=None)
            write = ItemWrite(key, states, item.version if item else None, deadline, item.ids if item else b"")
            self.commit(Commit("upgrade", "-", keys=[write]), now)
            for name in rows:
                self.db.delete_item(TableName=self.table, Key={"pk": _s(_row_pk(name, key)), "sk": _s("-")})
        return sum(len(states) for states in moved.values())

    def register_shard(self, shard: str, now: float) -> None:
        """Give ``shard`` a checkpoint with no event time yet, before its first commit: who
        looks for every shard's outboxes (the tick, a heartbeat about to fire) finds them by
        the checkpoints, and a first invocation may die between its commit and its checkpoint."""
        self.db.update_item(
            TableName=self.table,
            Key={"pk": _s("checkpoint"), "sk": _s(shard)},
            UpdateExpression="SET #at = if_not_exists(#at, :now)",
            ExpressionAttributeNames={"#at": "at"},
            ExpressionAttributeValues={":now": _n(now)},
        )

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

    def _item_write(self, write: ItemWrite, now: float) -> dict[str, Any]:
        key = {"pk": _s(_item_pk(write.key)), "sk": _s("-")}
        condition = _versioned(write.loaded_version)
        if not write.states and not write.ids:
            return {"Delete": {"TableName": self.table, "Key": key, **condition}}
        states = _states_encoder.encode(write.states)
        if len(states) > MAX_STATES_BYTES:
            raise ItemTooLarge(write.key, len(states))
        item: dict[str, Any] = {**key, "st": {"B": states}, "v": _n((write.loaded_version or 0) + 1)}
        if write.deadline is not None:
            item.update(tp=_s(TIMER_PARTITION), d=_n(write.deadline))
        expiries = [expires_at for _, _, expires_at, _ in write.states.values()]
        if write.ids:
            item["ids"] = {"B": write.ids}
            # its ids are kept a window of arrival: the item outlives its last write by that
            newest = max(dedup.ids_of(write.ids).values())
            expiries.append(int(max(newest, now) + dedup.WINDOW_S + STATE_TTL_MARGIN_S))
        if None not in expiries:
            item["ttl"] = _n(int(max(e for e in expiries if e is not None)))
        return {"Put": {"TableName": self.table, "Item": item, **condition}}

    def _progress_write(self, progress: Progress) -> dict[str, Any]:
        """The shard's progress moved to ``progress.last``, if it still is where it was loaded."""
        put: dict[str, Any] = {
            "TableName": self.table,
            "Item": {"pk": _s(_progress_pk(progress.shard)), "sk": _s("-"), "seq": _s(progress.last)},
        }
        if progress.loaded is None:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            put["ConditionExpression"] = "seq = :seq"
            put["ExpressionAttributeValues"] = {":seq": _s(progress.loaded)}
        return {"Put": put}

    def _row_write(self, row: RowWrite) -> dict[str, Any]:
        key = {"pk": _s(_row_pk(row.name, row.key)), "sk": _s("-")}
        condition = _versioned(row.loaded_version)
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


def _versioned(loaded_version: int | None) -> dict[str, Any]:
    """The condition of a versioned write: the version loaded is still there (None: nothing was)."""
    if loaded_version:
        return {"ConditionExpression": "v = :v", "ExpressionAttributeValues": {":v": _n(loaded_version)}}
    return {"ConditionExpression": "attribute_not_exists(pk)"}
