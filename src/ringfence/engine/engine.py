"""The engine: a pure, deterministic function of (state, event) -> (state, alert signals).

It knows nothing of HTTP, SQLite or Kafka. Runtimes feed it events in log order, call
:meth:`Engine.advance` with the watermark so absence timers fire, collect its signals,
and persist :meth:`Engine.take_changes` together with the offset they reflect.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from ringfence.engine.anomaly import (
    AnomalyKind,
    AnomalySpec,
    HalfSpaceTrees,
    ZState,
    decode_zstate,
    encode_zstate,
    inputs_of,
    score_zscore,
)
from ringfence.engine.event_time import event_time_mark
from ringfence.engine.expressions import DictContext, walk
from ringfence.engine.features import READ_BEFORE_UPDATE, FeatureSpec, FeatureState, decode_state, encode_state
from ringfence.engine.keys import key_of
from ringfence.engine.pack import RulePack
from ringfence.engine.packed import StateRow, pack_rows, unpack_rows
from ringfence.engine.patterns import (
    PatternKind,
    PatternSpec,
    PatternState,
    Timers,
    advance_absence,
    advance_sequence,
    decode_pattern_state,
    encode_pattern_state,
    snapshot,
)
from ringfence.engine.rules import AlertSignal, Output, with_fx
from ringfence.events.model import Event, decode_event
from ringfence.events.types import NUMERIC_MONEY_FIELDS

StateKey = tuple[str, str]  # (state name, key)


class EventContext:
    """What expressions see while one event is processed: its fields, features, pattern steps."""

    __slots__ = ("_cache", "_engine", "at", "event", "keys", "steps")

    def __init__(self, event: Event, engine: Engine, at: float | None = None) -> None:
        self.event = event
        # when features see the event: its event_time_mark once processing knows its arrival
        self.at = event.occurred_at if at is None else at
        self.steps: Mapping[str, Mapping[str, Any]] = {}
        self.keys: dict[tuple[tuple[str, ...], ...], str | None] = {}  # state keys, by their field paths
        self._engine = engine
        self._cache: dict[str, Any] = {}

    def key(self, by: tuple[tuple[str, ...], ...]) -> str | None:
        """This event's state key for ``by``, computed once per event."""
        if by not in self.keys:
            self.keys[by] = key_of(by, self)
        return self.keys[by]

    def field(self, path: tuple[str, ...]) -> Any:
        if path[0] != "data":
            return getattr(self.event, path[0], None)
        if len(path) == 2:  # the common case, kept short: it runs for most expression leaves
            value = self.event.data.get(path[1])
            return float(value) if path[1] in NUMERIC_MONEY_FIELDS and value.__class__ is str else value
        return walk(self.event.data, path[1:])

    def feature(self, name: str) -> Any:
        if name not in self._cache:
            self._cache[name] = self._engine.feature_value(name, self)
        return self._cache[name]

    def list_(self, name: str) -> frozenset[Any]:
        return self._engine.lists.get(name, frozenset())

    def step(self, name: str, path: tuple[str, ...]) -> Any:
        value = walk(self.steps.get(name), path)
        if len(path) == 2 and path[0] == "data" and path[1] in NUMERIC_MONEY_FIELDS and isinstance(value, str):
            return float(value)
        return value

    def remember(self, name: str, value: Any) -> None:
        self._cache[name] = value

    def carry(self, values: Mapping[str, Any]) -> None:
        """Values of features another stage computed for this event (see ``process_stage``)."""
        self._cache.update(values)

    def has(self, name: str) -> bool:
        return name in self._cache


def _event_from(snap: Mapping[str, Any]) -> Event:
    return Event(
        event_id=snap["event_id"],
        type=snap["type"],
        occurred_at=snap["occurred_at"],
        source=snap["source"],
        data=snap["data"],
        customer_id=snap.get("customer_id"),
    )


def _ref(snap: Mapping[str, Any]) -> dict[str, Any]:
    return {k: snap[k] for k in ("event_id", "type", "occurred_at", "offset", "ingested_at")}


def persisted_names(pack: RulePack) -> dict[str, str]:
    """Each state name of ``pack`` with the digest of its definition, as checkpoints store it:
    a changed definition never restores the state of the old one. Signatures hold plain values
    (an enum's repr names its class), so the same definition keeps its name across releases."""
    specs: list[FeatureSpec | AnomalySpec | PatternSpec] = [*pack.features, *pack.anomalies, *pack.patterns]
    return {
        x.state_name: f"{x.state_name}#{hashlib.sha256(repr(x.signature).encode()).hexdigest()[:12]}" for x in specs
    }


def check_run(bodies: Sequence[bytes], *columns: Sequence[int] | Sequence[float]) -> None:
    """A run of stored events comes as columns of one length: refused before any event runs."""
    if any(len(column) != len(bodies) for column in columns):
        raise ValueError("process_raw_many: bodies, offsets, partitions and ingested_ats differ in length")


class Engine:
    """Runs a rule pack over events. Single-threaded; one instance per set of partitions."""

    undoes = False  # whether :meth:`undo` can put back a failed batch (the compiled core's can)

    def __init__(self, pack: RulePack, allowed_lateness_s: float = 5.0) -> None:
        self.pack = pack
        self.lists: dict[str, frozenset[str]] = dict(pack.lists)
        # lists given values at run time (``PUT /v1/lists``): theirs win over any pack's, the
        # others take each pack's own, on a reload as after a restart
        self.edited_lists: set[str] = set()
        self.allowed_lateness_s = allowed_lateness_s
        self.states: dict[str, dict[str, FeatureState]] = {f.name: {} for f in pack.features}
        self.zstates: dict[str, dict[str, ZState]] = {
            a.name: {} for a in pack.anomalies if a.kind == AnomalyKind.ROBUST_ZSCORE
        }
        self.models: dict[str, HalfSpaceTrees] = {
            a.name: HalfSpaceTrees() for a in pack.anomalies if a.kind == AnomalyKind.HALF_SPACE_TREES
        }
        self.pattern_states: dict[str, dict[str, PatternState]] = {p.id: {} for p in pack.patterns}
        self.timers = Timers()
        self.max_event_time: dict[int, float] = {}
        self.hits: dict[tuple[str, str], int] = defaultdict(int)
        self.late_events = 0
        self.ran = 0  # events the last process_raw_many ran: all, or those before the one that failed
        self._dirty: set[StateKey] = set()
        self._walk: list[StateKey] | None = None  # a snapshot being written (snapshot_begin)
        self._walk_at = 0
        self._features = {f.name: f for f in pack.features}
        self._anomalies = {a.name: a for a in pack.anomalies}
        self._patterns = {p.id: p for p in pack.patterns}
        self._by_type: dict[str, tuple[list[FeatureSpec], list[AnomalySpec], list[Any], list[PatternSpec]]] = {}
        self.persisted_names = persisted_names(pack)
        self._internal_names = {v: k for k, v in self.persisted_names.items()}

    def _for_type(self, event_type: str) -> tuple[list[FeatureSpec], list[AnomalySpec], list[Any], list[PatternSpec]]:
        found = self._by_type.get(event_type)
        if found is None:
            p = self.pack
            found = (
                [f for f in p.features if f.on is None or event_type in f.on],
                [a for a in p.anomalies if a.on is None or event_type in a.on],
                [r for r in p.rules if event_type in r.on],
                [s for s in p.patterns if event_type in s.on],
            )
            self._by_type[event_type] = found
        return found

    def set_list(self, name: str, values: frozenset[str]) -> None:
        """Replace the values of list ``name`` (an admin edited it)."""
        self.lists[name] = values
        self.edited_lists.add(name)

    # -- time ----------------------------------------------------------------------------

    def watermark(self, partition: int | None = None) -> float:
        """Max event time seen (in ``partition``, or anywhere) minus the allowed lateness."""
        if partition is None:
            latest = max(self.max_event_time.values(), default=-math.inf)
        else:
            latest = self.max_event_time.get(partition, -math.inf)
        return latest - self.allowed_lateness_s

    def is_late(self, event: Event, partition: int) -> bool:
        """True if ``event`` is behind its partition's watermark (it is still processed)."""
        return event.occurred_at < self.watermark(partition)

    # -- processing ------------------------------------------------------------------------

    def process(self, event: Event, offset: int, partition: int, ingested_at: float) -> list[AlertSignal]:
        """Fire the timers this event's time passes, then fold ``event`` into features, scores
        and patterns and evaluate the rules on it; return the signals of both."""
        return self._process(EventContext(event, self), offset, partition, ingested_at, evaluate_rules=True)

    def process_raw(
        self, body: bytes, offset: int, partition: int, ingested_at: float
    ) -> tuple[list[AlertSignal], float | None]:
        """:meth:`process` of a stored event (``encode_event``'s JSON): the signals, and the
        partition's watermark if the event was behind it (None: on time). The compiled core
        overrides it to skip decoding the event in Python."""
        event = decode_event(body)
        mark = self.watermark(partition)
        return self.process(event, offset, partition, ingested_at), mark if event.occurred_at < mark else None

    def process_raw_many(
        self,
        bodies: Sequence[bytes],
        offsets: Sequence[int],
        partitions: Sequence[int],
        ingested_ats: Sequence[float],
    ) -> tuple[list[AlertSignal], list[tuple[int, float]]]:
        """:meth:`process_raw` of stored events in order (a processor's batch): all their
        signals, and the (index, watermark) of each event that was behind its partition's
        watermark. The first that fails raises; those before it were run (:attr:`ran` says how
        many). The compiled core overrides it with one call for the lot."""
        self.ran = 0
        check_run(bodies, offsets, partitions, ingested_ats)
        signals: list[AlertSignal] = []
        late: list[tuple[int, float]] = []
        run = zip(bodies, offsets, partitions, ingested_ats, strict=True)
        for i, (body, offset, partition, ingested_at) in enumerate(run):
            got, behind = self.process_raw(body, offset, partition, ingested_at)
            signals += got
            if behind is not None:
                late.append((i, behind))
            self.ran = i + 1
        return signals, late

    def fresh(self) -> Engine:
        """An engine of the same kind for the same pack, with no state (lists and hit counts
        carried over): to reload state from a checkpoint."""
        engine = self._blank()
        for name in self.edited_lists:
            engine.set_list(name, self.lists[name])
        engine.hits = self.hits
        return engine

    def _blank(self) -> Engine:
        """An engine of the same kind and settings for the same pack, with no state."""
        return type(self)(self.pack, self.allowed_lateness_s)

    def process_stage(
        self,
        event: Event,
        offset: int,
        partition: int,
        ingested_at: float,
        carried: Mapping[str, Any],
        final: bool,
        report: Iterable[str] = (),
    ) -> tuple[list[AlertSignal], dict[str, Any]]:
        """:meth:`process` for one keyed stage (see :mod:`ringfence.engine.stages`): this engine
        holds the features of one key; ``carried`` are the values other stages computed for the
        event. Rules run only with ``final``. Returns the signals, and the values of this
        stage's features and scores named in ``report`` as the event saw them."""
        ctx = EventContext(event, self)
        ctx.carry(carried)
        signals = self._process(ctx, offset, partition, ingested_at, evaluate_rules=final)
        return signals, {name: ctx.feature(name) for name in report}

    def _process(
        self, ctx: EventContext, offset: int, partition: int, ingested_at: float, evaluate_rules: bool
    ) -> list[AlertSignal]:
        event = ctx.event
        late = self.is_late(event, partition)
        if late:
            self.late_events += 1
        if (mark := event_time_mark(event.occurred_at, ingested_at)) > self.max_event_time.get(partition, -math.inf):
            self.max_event_time[partition] = mark
        # timers due before this event fire first, so results never depend on batch boundaries
        signals = self.advance() if len(self.timers) else []
        fired = len(signals)
        # features see (and keep) the event at its mark: never past its arrival
        t = ctx.at = mark
        features, anomalies, rules, patterns = self._for_type(event.type)
        for spec in features:
            if not spec.applies(event.type, ctx):
                continue
            key = ctx.key(spec.by)
            if key is None:
                continue
            table = self.states[spec.name]
            state = table.get(key)
            if spec.agg in READ_BEFORE_UPDATE:
                ctx.remember(spec.name, spec.value(state, t))
            if state is None:
                state = table[key] = FeatureState()
            spec.update(state, mark, ctx)
            self._dirty.add((spec.name, key))
        for anomaly in anomalies:
            ctx.remember(anomaly.name, self._score(anomaly, ctx, t))
        for rule in rules if evaluate_rules else ():
            if rule.when.evaluate(ctx):
                signals.append(
                    self._signal(rule.id, rule.output, rule.evidence_features, ctx, offset, ingested_at, late)
                )
        if patterns:
            snap = snapshot(event, offset, ingested_at)
            for pattern in patterns:
                signal = self._advance_pattern(pattern, ctx, snap, late)
                if signal is not None:
                    signals.append(signal)
        for s in signals[fired:]:
            self.hits[(s.rule_id, s.mode)] += 1
        return signals[:fired] + [with_fx(s, event.data) for s in signals[fired:]] if len(signals) > fired else signals

    def _score(self, spec: AnomalySpec, ctx: EventContext, t: float) -> float | None:
        if not spec.applies(ctx.event.type, ctx):
            return None
        key = spec.key(ctx)
        x = inputs_of(spec, ctx)
        if key is None or x is None:
            return None
        self._dirty.add((spec.state_name, key))
        if spec.kind == AnomalyKind.HALF_SPACE_TREES:
            return self.models[spec.name].score_and_learn(x, spec.min_samples)
        table = self.zstates[spec.name]
        state = table.get(key)
        if state is None:
            state = table[key] = ZState(t)
        return score_zscore(spec, state, x["x0"], t)

    def _advance_pattern(
        self, spec: PatternSpec, ctx: EventContext, snap: dict[str, Any], late: bool
    ) -> AlertSignal | None:
        key = spec.key(ctx)
        if key is None:
            return None
        table = self.pattern_states[spec.id]
        state = table.get(key)
        if state is None:
            state = PatternState(ctx.at)
        state.seen = max(state.seen, ctx.at)
        signal = None
        if spec.kind == PatternKind.SEQUENCE:
            completed = advance_sequence(spec, state, ctx.at, snap, ctx)
            if completed is not None:
                ctx.steps = {s.name: c for s, c in zip(spec.steps, completed, strict=True)}
                signal = self._signal(
                    spec.id,
                    spec.output,
                    spec.evidence_features,
                    ctx,
                    snap["offset"],
                    snap["ingested_at"],
                    late,
                    related=[_ref(c) for c in completed[:-1]],
                )
                ctx.steps = {}
        else:
            armed = state.deadline
            if advance_absence(spec, state, ctx.at, snap, ctx):
                assert state.deadline is not None
                # one timer per key: a deadline pushed later is re-armed when the old one
                # comes due (see advance), so a busy key does not add an entry per event
                if armed is None or state.deadline < armed:
                    self.timers.add(state.deadline, spec.id, key)
        if state.partials or state.deadline is not None or spec.kind == PatternKind.ABSENCE:
            table[key] = state
            self._dirty.add((spec.state_name, key))
        elif key in table:
            del table[key]
            self._dirty.add((spec.state_name, key))
        return signal

    def advance(self, watermark: float | None = None) -> list[AlertSignal]:
        """Fire the absence timers whose deadline is before ``watermark`` (default: the events')."""
        mark = self.watermark() if watermark is None else watermark
        signals = []
        # one entry at a time: an entry re-armed below may come due again in this call
        while (entry := self.timers.pop_due(mark)) is not None:
            deadline, pattern_id, key = entry
            spec = self._patterns.get(pattern_id)
            state = self.pattern_states.get(pattern_id, {}).get(key)
            if spec is None or state is None or state.deadline is None or state.anchor is None:
                continue  # cancelled since
            if state.deadline > deadline:  # pushed later since: wait for the new deadline
                self.timers.add(state.deadline, pattern_id, key)
                continue
            if state.deadline < deadline:
                continue  # moved earlier since: that deadline has its own entry
            anchor = state.anchor
            ctx = EventContext(_event_from(anchor), self, event_time_mark(anchor["occurred_at"], anchor["ingested_at"]))
            assert spec.expect is not None
            ctx.steps = {spec.after.name if spec.after else spec.expect.name: anchor}
            signal = self._signal(
                spec.id, spec.output, spec.evidence_features, ctx, anchor["offset"], anchor["ingested_at"], False
            )
            # an absence happens when its deadline passes: that is the alert's event time
            signals.append(msgspec.structs.replace(signal, occurred_at=deadline))
            state.deadline = None
            if spec.after is not None:
                state.anchor = None
            self._dirty.add((spec.state_name, key))
        for s in signals:
            self.hits[(s.rule_id, s.mode)] += 1
        return signals

    def _signal(
        self,
        detection_id: str,
        out: Output,
        evidence: frozenset[str],
        ctx: EventContext,
        offset: int,
        ingested_at: float,
        late: bool,
        related: list[dict[str, Any]] | None = None,
    ) -> AlertSignal:
        event = ctx.event
        return AlertSignal(
            rule_id=detection_id,
            rule_version=self.pack.version,
            severity=out.severity,
            audience=out.audience,
            mode=out.mode,
            dedup_key=out.dedup.render(ctx),
            title=out.title.render(ctx),
            summary=out.summary.render(ctx),
            labels={k: t.render(ctx) for k, t in out.labels},
            event_id=event.event_id,
            event_type=event.type,
            offset=offset,
            occurred_at=event.occurred_at,
            ingested_at=ingested_at,
            features={name: ctx.feature(name) for name in sorted(evidence)},
            customer_id=event.customer_id,
            late=late,
            related_events=related or [],
        )

    # -- reading state -----------------------------------------------------------------------

    def feature_value(self, name: str, ctx: EventContext) -> Any:
        """The value of feature ``name`` for the keys of the event in ``ctx``."""
        spec = self._features.get(name)
        if spec is None:
            return None  # an anomaly score for an event it does not apply to
        key = ctx.key(spec.by)
        state = self.states[name].get(key) if key is not None else None
        return spec.value(state, ctx.at)

    def features_of(self, key_fields: dict[str, Any], at: float) -> dict[str, Any]:
        """Current values of every feature whose key is fully given by ``key_fields``."""
        ctx = DictContext(key_fields)
        out: dict[str, Any] = {}
        for spec in self.pack.features:
            key = spec.key(ctx)
            if key is not None and spec.by:
                out[spec.name] = spec.value(self.states[spec.name].get(key), at)
        return out

    def state_rows_of(self, event: Event) -> tuple[set[StateKey], set[StateKey]]:
        """The persisted (name, key) state rows processing ``event`` may read, and the subset it
        may change. Supersets, for runtimes that load state per batch (aws) rather than hold it."""
        ctx = EventContext(event, self)
        reads: set[StateKey] = set()
        specs: list[FeatureSpec | AnomalySpec | PatternSpec] = [
            *self.pack.features,
            *self.pack.anomalies,
            *self.pack.patterns,
        ]
        for spec in specs:
            key = spec.key(ctx)
            if key is not None:
                reads.add((self.persisted_names[spec.state_name], key))
        features, anomalies, _, patterns = self._for_type(event.type)
        writes: set[StateKey] = set()
        changed: list[FeatureSpec | AnomalySpec | PatternSpec] = [*features, *anomalies, *patterns]
        for spec in changed:
            key = spec.key(ctx)
            if key is not None:
                writes.add((self.persisted_names[spec.state_name], key))
        return reads, writes

    def timer_of(self, persisted: str, key: str) -> float | None:
        """The armed absence deadline of a pattern state row, if any (runtimes index them)."""
        kind, _, ident = self._internal_names.get(persisted, "").partition(":")
        state = self.pattern_states.get(ident, {}).get(key) if kind == "pattern" else None
        return state.deadline if state is not None else None

    def is_heartbeat(self, persisted: str) -> bool:
        """True for the state of a heartbeat (an absence with no ``after``): its deadline only
        ever moves later, so writers may merge copies of it by keeping the latest deadline."""
        kind, _, ident = self._internal_names.get(persisted, "").partition(":")
        spec = self._patterns.get(ident) if kind == "pattern" else None
        return spec is not None and spec.is_heartbeat

    def horizon_of(self, persisted: str) -> float | None:
        """How long a quiet key's state row matters (window, ttl or pattern span); None: for ever."""
        name = self._internal_names.get(persisted, "")
        kind, _, ident = name.partition(":")
        if kind == "pattern":
            return self._patterns[ident].within if ident in self._patterns else None
        if kind == "anomaly":
            return self._anomalies[ident].window if ident in self._anomalies else None
        spec = self._features.get(name)
        if spec is None:
            return None
        return spec.window if spec.window is not None else spec.ttl

    def state_size(self) -> int:
        """How many per-key states are held."""
        tables: list[Mapping[str, Any]] = [*self.states.values(), *self.zstates.values(), *self.pattern_states.values()]
        return sum(len(t) for t in tables)

    # -- hot reload ----------------------------------------------------------------------------

    def reloaded(self, pack: RulePack) -> Engine:
        """An engine for ``pack`` that keeps the state of every feature, score and pattern
        whose definition did not change (and the watermarks, lists and hit counts)."""
        fresh = Engine(pack, self.allowed_lateness_s)
        fresh.max_event_time = dict(self.max_event_time)
        for name in self.edited_lists & pack.lists.keys():
            fresh.set_list(name, self.lists[name])
        fresh.hits = self.hits
        for f in pack.features:
            old = self._features.get(f.name)
            if old is not None and old.signature == f.signature:
                fresh.states[f.name] = self.states[f.name]
        for a in pack.anomalies:
            old_a = self._anomalies.get(a.name)
            if old_a is not None and old_a.signature == a.signature:
                if a.name in self.models:
                    fresh.models[a.name] = self.models[a.name]
                if a.name in self.zstates:
                    fresh.zstates[a.name] = self.zstates[a.name]
        for p in pack.patterns:
            old_p = self._patterns.get(p.id)
            if old_p is not None and old_p.signature == p.signature:
                fresh.pattern_states[p.id] = self.pattern_states[p.id]
                for key, state in fresh.pattern_states[p.id].items():
                    if state.deadline is not None:
                        fresh.timers.add(state.deadline, p.id, key)
        return fresh

    def dropped_state_names(self, pack: RulePack) -> list[str]:
        """State names this engine holds that an engine reloaded with ``pack`` would not keep."""
        kept = set(persisted_names(pack).values())
        return sorted(name for name, persisted in self.persisted_names.items() if persisted not in kept)

    # -- persistence ---------------------------------------------------------------------------

    def expire(self, watermark: float) -> int:
        """Drop the state of keys quiet past their horizon; return how many."""
        dropped = 0
        for spec in self.pack.features:
            table = self.states[spec.name]
            for key in [k for k, s in table.items() if spec.expired(s, watermark)]:
                del table[key]
                self._dirty.add((spec.name, key))
                dropped += 1
        for anomaly in self.pack.anomalies:
            ztable = self.zstates.get(anomaly.name, {})
            horizon = anomaly.window or math.inf
            for key in [k for k, s in ztable.items() if s.seen < watermark - horizon]:
                del ztable[key]
                self._dirty.add((anomaly.state_name, key))
                dropped += 1
        for pattern in self.pack.patterns:
            ptable = self.pattern_states[pattern.id]
            for key in [k for k, s in ptable.items() if s.seen < watermark - pattern.within and s.deadline is None]:
                del ptable[key]
                self._dirty.add((pattern.state_name, key))
                dropped += 1
        return dropped

    def _encoded(self, name: str, key: str) -> bytes | None:
        kind, _, ident = name.partition(":")
        if kind == "pattern":
            pstate = self.pattern_states.get(ident, {}).get(key)
            return encode_pattern_state(pstate) if pstate is not None else None
        if kind == "anomaly":
            if ident in self.models:
                return self.models[ident].dumps()
            zstate = self.zstates.get(ident, {}).get(key)
            return encode_zstate(zstate) if zstate is not None else None
        state = self.states.get(name, {}).get(key)
        return encode_state(state) if state is not None else None

    def take_changes(self) -> list[tuple[str, str, bytes | None]]:
        """State rows changed since the last call: (state name, key, encoded state or None)."""
        changes = [(self.persisted_names[name], key, self._encoded(name, key)) for name, key in self._dirty]
        self._dirty.clear()
        return changes

    def undo_point(self) -> None:
        """The state held now is what the store holds (a checkpoint restored): :meth:`undo`
        comes back here. From the first call on, the engine keeps what an undo needs (a copy of
        each state as it was before its first change since the point, or since the last
        :meth:`take_changes`); without one it keeps nothing (a back-test)."""

    def changes_committed(self) -> None:
        """The changes taken last go to the store (a commit carries them): :meth:`undo` comes
        back to that take from now on, not to what events changed after it (one that failed
        after the take, before the commit of the records before it)."""

    def forget_undo(self) -> None:
        """Keep nothing to undo with any more (the copies cost time an event), until the next
        :meth:`undo_point`."""

    def undo(self) -> bool:
        """Put back what the events since the undo point changed, so that a failed event costs
        only the states its batch touched; False, changing nothing, where it cannot (no point,
        or expiry or a restore since): then reload the checkpoint. This engine (the
        reference) keeps no copies: its runtimes reload."""
        return False

    def take_changes_packed(self) -> tuple[bytes, int] | None:
        """:meth:`take_changes` packed (:mod:`ringfence.engine.packed`), with how many rows;
        None if nothing changed."""
        rows = self.take_changes()
        return (pack_rows(rows), len(rows)) if rows else None

    def restore_packed(self, packed: bytes) -> int:
        """Apply packed rows (a changelog entry or snapshot part) in order; return how many."""
        rows = unpack_rows(packed)
        self._restore_rows(rows)
        return len(rows)

    def snapshot_begin(self) -> None:
        """Start a snapshot: note every state held now. :meth:`snapshot_next` writes them a
        part at a time between batches; a state changed or dropped after its part was written
        is in the changelog from the snapshot's start on, which restore applies over it."""
        walk = [(f.name, key) for f in self.pack.features for key in self.states[f.name]]
        walk += [(f"anomaly:{name}", key) for name, table in self.zstates.items() for key in table]
        walk += [(f"anomaly:{name}", "") for name in self.models]  # one model for all keys
        walk += [(p.state_name, key) for p in self.pack.patterns for key in self.pattern_states[p.id]]
        self._walk, self._walk_at = walk, 0

    def snapshot_next(self, max_rows: int) -> tuple[bytes, int, bool]:
        """The next part of the snapshot begun last: at least ``max_rows`` rows unless it is
        the last, packed; (bytes, rows, whether it is the last)."""
        walk = self._walk
        if walk is None:
            raise RuntimeError("no snapshot begun")
        rows: list[StateRow] = []
        while self._walk_at < len(walk) and len(rows) < max_rows:
            name, key = walk[self._walk_at]
            self._walk_at += 1
            if (state := self._encoded(name, key)) is not None:
                rows.append((self.persisted_names[name], key, state))
        last = self._walk_at >= len(walk)
        if last:
            self._walk = None
        return pack_rows(rows), len(rows), last

    def restore(self, rows: Iterable[tuple[str, str, bytes]], max_event_time: dict[int, float]) -> None:
        """Load checkpointed state (from :meth:`take_changes`); unknown names are ignored."""
        self._restore_rows(rows)
        self.max_event_time = dict(max_event_time)

    def _restore_rows(self, rows: Iterable[StateRow]) -> None:
        for persisted, key, raw in rows:
            name = self._internal_names.get(persisted)
            if name is None:
                continue  # state of a definition that is no longer in the pack
            kind, _, ident = name.partition(":")
            if raw is None:  # gone since (a stale timer of a pattern state finds none)
                table: dict[str, Any] | None = (
                    self.pattern_states.get(ident)
                    if kind == "pattern"
                    else self.zstates.get(ident)
                    if kind == "anomaly"
                    else self.states.get(name)
                )
                if table is not None:
                    table.pop(key, None)
            elif kind == "pattern" and ident in self.pattern_states:
                state = decode_pattern_state(raw)
                self.pattern_states[ident][key] = state
                if state.deadline is not None:
                    self.timers.add(state.deadline, ident, key)
            elif kind == "anomaly" and ident in self.models:
                self.models[ident] = HalfSpaceTrees.loads(raw)
            elif kind == "anomaly" and ident in self.zstates:
                self.zstates[ident][key] = decode_zstate(raw)
            elif name in self.states:
                self.states[name][key] = decode_state(raw)
