"""The engine: a pure, deterministic function of (state, event) -> (state, alert signals).

It knows nothing of HTTP, SQLite or Kafka. Runtimes feed it events in log order per
partition, collect its signals, and persist :meth:`Engine.take_changes` together with
the offset they reflect.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ringfence.engine.features import (
    READ_BEFORE_UPDATE,
    FeatureSpec,
    FeatureState,
    decode_state,
    encode_state,
)
from ringfence.engine.pack import RulePack
from ringfence.engine.rules import AlertSignal, RuleSpec
from ringfence.events.model import Event
from ringfence.events.types import MONEY_FIELDS

StateKey = tuple[str, str]  # (feature name, key)


class EventContext:
    """What expressions see while one event is processed: its fields and feature values."""

    __slots__ = ("_cache", "_engine", "event")

    def __init__(self, event: Event, engine: Engine) -> None:
        self.event = event
        self._engine = engine
        self._cache: dict[str, Any] = {}

    def field(self, path: tuple[str, ...]) -> Any:
        if path[0] != "data":
            return getattr(self.event, path[0], None)
        if len(path) == 2:  # the common case, kept short: it runs for most expression leaves
            value = self.event.data.get(path[1])
            return float(value) if path[1] in MONEY_FIELDS and value.__class__ is str else value
        value = self.event.data
        for part in path[1:]:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    def feature(self, name: str) -> Any:
        if name not in self._cache:
            self._cache[name] = self._engine.feature_value(name, self)
        return self._cache[name]

    def list_(self, name: str) -> frozenset[Any]:
        return self._engine.lists.get(name, frozenset())

    def remember(self, name: str, value: Any) -> None:
        self._cache[name] = value


class Engine:
    """Runs a rule pack over events. Single-threaded; one instance per set of partitions."""

    def __init__(self, pack: RulePack, allowed_lateness_s: float = 5.0) -> None:
        self.pack = pack
        self.lists: dict[str, frozenset[str]] = dict(pack.lists)
        self.allowed_lateness_s = allowed_lateness_s
        self.states: dict[str, dict[str, FeatureState]] = {f.name: {} for f in pack.features}
        self.max_event_time: dict[int, float] = {}
        self.shadow_hits: dict[str, int] = defaultdict(int)
        self.late_events = 0
        self._dirty: set[StateKey] = set()
        self._features = {f.name: f for f in pack.features}
        self._features_by_type: dict[str, list[FeatureSpec]] = defaultdict(list)
        self._rules_by_type: dict[str, list[RuleSpec]] = defaultdict(list)
        for rule in pack.rules:
            for t in rule.on:
                self._rules_by_type[t].append(rule)

    def _features_for(self, event_type: str) -> list[FeatureSpec]:
        specs = self._features_by_type.get(event_type)
        if specs is None:
            specs = [f for f in self.pack.features if f.on is None or event_type in f.on]
            self._features_by_type[event_type] = specs
        return specs

    def watermark(self, partition: int) -> float:
        """Max event time seen in ``partition`` minus the allowed lateness."""
        return self.max_event_time.get(partition, -math.inf) - self.allowed_lateness_s

    def is_late(self, event: Event, partition: int) -> bool:
        """True if ``event`` is behind its partition's watermark (it is still processed)."""
        return event.occurred_at < self.watermark(partition)

    def process(self, event: Event, offset: int, partition: int, ingested_at: float) -> list[AlertSignal]:
        """Fold ``event`` into the features and evaluate the rules on it."""
        late = self.is_late(event, partition)
        if late:
            self.late_events += 1
        if event.occurred_at > self.max_event_time.get(partition, -math.inf):
            self.max_event_time[partition] = event.occurred_at
        ctx = EventContext(event, self)
        t = event.occurred_at
        for spec in self._features_for(event.type):
            if not spec.applies(event.type, ctx):
                continue
            key = spec.key(ctx)
            if key is None:
                continue
            table = self.states[spec.name]
            state = table.get(key)
            if spec.agg in READ_BEFORE_UPDATE:
                ctx.remember(spec.name, spec.value(state, t))
            if state is None:
                state = table[key] = FeatureState()
            spec.update(state, t, ctx)
            self._dirty.add((spec.name, key))
        signals: list[AlertSignal] = []
        for rule in self._rules_by_type.get(event.type, ()):
            if not rule.when.evaluate(ctx):
                continue
            if rule.mode == "shadow":
                self.shadow_hits[rule.id] += 1
            signals.append(self._signal(rule, ctx, offset, ingested_at, late))
        return signals

    def _signal(self, rule: RuleSpec, ctx: EventContext, offset: int, ingested_at: float, late: bool) -> AlertSignal:
        event = ctx.event
        return AlertSignal(
            rule_id=rule.id,
            rule_version=self.pack.version,
            severity=rule.severity,
            audience=rule.audience,
            mode=rule.mode,
            dedup_key=rule.dedup.render(ctx),
            title=rule.title.render(ctx),
            summary=rule.summary.render(ctx),
            labels={k: t.render(ctx) for k, t in rule.labels},
            event_id=event.event_id,
            event_type=event.type,
            offset=offset,
            occurred_at=event.occurred_at,
            ingested_at=ingested_at,
            features={name: ctx.feature(name) for name in sorted(rule.evidence_features)},
            customer_id=event.customer_id,
            late=late,
        )

    def feature_value(self, name: str, ctx: EventContext) -> Any:
        """The value of feature ``name`` for the keys of the event in ``ctx``."""
        spec = self._features[name]
        key = spec.key(ctx)
        state = self.states[name].get(key) if key is not None else None
        return spec.value(state, ctx.event.occurred_at)

    def features_of(self, key_fields: dict[str, Any], at: float) -> dict[str, Any]:
        """Current values of every feature whose key is fully given by ``key_fields``."""
        from ringfence.engine.expressions import DictContext

        ctx = DictContext(key_fields)
        out: dict[str, Any] = {}
        for spec in self.pack.features:
            key = spec.key(ctx)
            if key is not None and spec.by:
                out[spec.name] = spec.value(self.states[spec.name].get(key), at)
        return out

    def expire(self, partition_watermark: float) -> int:
        """Drop the state of keys quiet past their feature's window; return how many."""
        dropped = 0
        for spec in self.pack.features:
            table = self.states[spec.name]
            for key in [k for k, s in table.items() if spec.expired(s, partition_watermark)]:
                del table[key]
                self._dirty.add((spec.name, key))
                dropped += 1
        return dropped

    def take_changes(self) -> list[tuple[str, str, bytes | None]]:
        """State rows changed since the last call: (feature, key, encoded state or None)."""
        changes = []
        for name, key in self._dirty:
            state = self.states.get(name, {}).get(key)
            changes.append((name, key, encode_state(state) if state is not None else None))
        self._dirty.clear()
        return changes

    def restore(self, rows: Iterable[tuple[str, str, bytes]], max_event_time: dict[int, float]) -> None:
        """Load checkpointed state (from :meth:`take_changes`); unknown features are ignored."""
        for name, key, raw in rows:
            if name in self.states:
                self.states[name][key] = decode_state(raw)
        self.max_event_time = dict(max_event_time)

    def state_size(self) -> int:
        """How many (feature, key) states are held."""
        return sum(len(t) for t in self.states.values())
