"""The engine split into keyed stages, for runtimes where no one process holds every key.

Every feature, anomaly score and pattern is kept by the owner of its key. Keys that include
``customer_id`` live with the customer (the log's own partitioning): the *customer* stage,
which every event enters first. Every other key (a card, a device, an IP, ``global``...) is
a stage of its own, reached through a repartition topic keyed by that key. An event visits
the customer stage, then the stages its type needs, in a fixed order; each stage folds the
event into its own state and carries the values it computed onward, and the event's last
stage evaluates the rules, which so see every feature as the one-process engine shows them.

Each stage may read the features of the stages before it; the order is the dependency
order, and a pack whose reads form a cycle (or where the customer stage reads a later
stage) is refused with the name of the definition at fault.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ringfence.engine.anomaly import AnomalySpec
from ringfence.engine.engine import Engine, EventContext
from ringfence.engine.features import FeatureSpec
from ringfence.engine.keys import KeyPaths, key_of
from ringfence.engine.pack import RulePack
from ringfence.engine.patterns import PatternSpec
from ringfence.engine.rules import AlertSignal, Output
from ringfence.errors import RulePackError
from ringfence.events.model import Event

CUSTOMER = "customer"
Spec = FeatureSpec | AnomalySpec | PatternSpec


def stage_of(by: KeyPaths) -> str:
    """The stage owning state keyed ``by``: a name usable in a topic name."""
    if ("customer_id",) in by:
        return CUSTOMER
    if not by:
        return "global"
    name = "+".join(".".join(path[1:] if path[0] == "data" else path) for path in by)
    return re.sub(r"[^a-zA-Z0-9._-]", "_", name.replace("+", "-"))


def _output_reads(output: Output) -> set[str]:
    templates = [output.title, output.summary, output.dedup, *(t for _, t in output.labels)]
    return {f for t in templates for f in t.features}


def reads_of(spec: Spec) -> set[str]:
    """The features (and anomaly scores) a definition's expressions read."""
    if isinstance(spec, FeatureSpec):
        return {f for e in (spec.of, spec.where) if e is not None for f in e.features}
    if isinstance(spec, AnomalySpec):
        exprs = [*spec.inputs, *([spec.where] if spec.where is not None else [])]
        return {f for e in exprs for f in e.features}
    return set(spec.evidence_features) | _output_reads(spec.output)


@dataclass(frozen=True)
class Stage:
    """One keyed stage: its key fields (None: the customer's), its sub-pack and what it owns."""

    name: str
    by: KeyPaths | None
    pack: RulePack
    owns: frozenset[str]

    def key(self, event: Event, ctx: EventContext) -> str | None:
        """The partition key of ``event`` in this stage (None: the event has no such key)."""
        if self.by is None:
            return event.customer_id or str(event.data.get("service") or "")
        return key_of(self.by, ctx)


@dataclass
class StagePlan:
    """The stages of a pack, in the order events visit them (the customer stage first)."""

    pack: RulePack
    stages: list[Stage]
    _needs: dict[str, list[Stage]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def route(self, event: Event, ctx: EventContext) -> list[tuple[Stage, str]]:
        """The stages after the customer's that ``event`` visits, with its key in each."""
        needs = self._needs.get(event.type)
        if needs is None:
            needs = self._needs[event.type] = self._stages_for(event.type)
        out = []
        for stage in needs:
            key = stage.key(event, ctx)
            if key is not None:
                out.append((stage, key))
        return out

    def _stages_for(self, event_type: str) -> list[Stage]:
        reads: set[str] = set()
        for rule in self.pack.rules:
            if event_type in rule.on:
                reads |= set(rule.evidence_features) | _output_reads(rule.output)
        needed = []
        for stage in self.stages[1:]:
            specs: list[Spec] = [*stage.pack.features, *stage.pack.anomalies, *stage.pack.patterns]
            updates = any(_applies(s, event_type) for s in specs)
            if updates or stage.owns & reads:
                needed.append(stage)
                reads |= {f for s in specs if _applies(s, event_type) for f in reads_of(s)}
        return needed

    def defaults(self, at: float, carried: Mapping[str, Any]) -> dict[str, Any]:
        """Values of the features no visited stage computed: what a key with no state shows."""
        return {f.name: f.value(None, at) for f in self.pack.features if f.name not in carried}


def _applies(spec: Spec, event_type: str) -> bool:
    on = spec.on
    return on is None or event_type in on


def plan_stages(pack: RulePack) -> StagePlan:
    """Split ``pack`` into keyed stages; raise RulePackError when its reads cannot be ordered."""
    specs: list[Spec] = [*pack.features, *pack.anomalies, *pack.patterns]
    by_stage: dict[str, list[Spec]] = {CUSTOMER: []}
    keys: dict[str, KeyPaths | None] = {CUSTOMER: None}
    owner: dict[str, str] = {}
    for spec in specs:
        name = stage_of(spec.by)
        by_stage.setdefault(name, []).append(spec)
        keys.setdefault(name, spec.by if name != CUSTOMER else None)
        if not isinstance(spec, PatternSpec):
            owner[spec.name] = name
    depends = {
        name: {owner[f] for s in members for f in reads_of(s) if f in owner and owner[f] != name}
        for name, members in by_stage.items()
    }
    for spec in by_stage[CUSTOMER]:
        foreign = sorted(f for f in reads_of(spec) if owner.get(f, CUSTOMER) != CUSTOMER)
        if foreign:
            raise RulePackError(
                f"reads {', '.join(foreign)}, kept by another key: the kafka runtime computes customer "
                "state first, so a definition keyed by customer may read only features keyed by customer",
                _label(spec),
            )
    order = [CUSTOMER]
    remaining = sorted(set(by_stage) - {CUSTOMER})
    while remaining:
        ready = [n for n in remaining if depends[n] <= set(order)]
        if not ready:
            raise RulePackError(f"the stages {', '.join(remaining)} read each other's features (a cycle)", "pack")
        order.append(ready[0])
        remaining.remove(ready[0])
    stages = [_stage(pack, name, keys[name], by_stage[name]) for name in order]
    return StagePlan(pack, stages)


def _stage(pack: RulePack, name: str, by: KeyPaths | None, members: Iterable[Spec]) -> Stage:
    specs = list(members)
    features = tuple(s for s in specs if isinstance(s, FeatureSpec))
    anomalies = tuple(s for s in specs if isinstance(s, AnomalySpec))
    patterns = tuple(s for s in specs if isinstance(s, PatternSpec))
    sub = dataclasses.replace(pack, features=features, anomalies=anomalies, patterns=patterns)
    owns = frozenset(f.name for f in features) | frozenset(a.name for a in anomalies)
    return Stage(name, by, sub, owns)


def _label(spec: Spec) -> str:
    kind = "pattern" if isinstance(spec, PatternSpec) else "anomaly" if isinstance(spec, AnomalySpec) else "feature"
    ident = spec.id if isinstance(spec, PatternSpec) else spec.name
    return f"{kind} {ident}"


def run_stage(
    plan: StagePlan,
    stage: Stage,
    engine: Engine,
    event: Event,
    position: tuple[int, int, float],
    carried: Mapping[str, Any],
    final: bool,
) -> tuple[list[AlertSignal], dict[str, Any]]:
    """Fold ``event`` into ``stage``'s ``engine`` (its log offset, partition and ingest time
    in ``position``); at the event's ``final`` stage, evaluate the rules too."""
    if final:  # rules see what a key with no state shows for the stages the event skipped
        carried = {
            **{k: v for k, v in plan.defaults(event.occurred_at, carried).items() if k not in stage.owns},
            **carried,
        }
    offset, partition, ingested_at = position
    return engine.process_stage(event, offset, partition, ingested_at, carried, final)


class StagedPipeline:
    """Every stage in one process, one engine each: what the kafka runtime computes, without
    Kafka (its tests compare it with the one-engine runtime)."""

    def __init__(self, pack: RulePack, allowed_lateness_s: float = 5.0) -> None:
        self.plan = plan_stages(pack)
        self.engines = {s.name: Engine(s.pack, allowed_lateness_s) for s in self.plan.stages}

    def process(self, event: Event, offset: int, partition: int, ingested_at: float) -> list[AlertSignal]:
        first = self.plan.stages[0]
        engine = self.engines[first.name]
        route = self.plan.route(event, EventContext(event, engine))
        signals, carried = run_stage(
            self.plan, first, engine, event, (offset, partition, ingested_at), {}, final=not route
        )
        for i, (stage, _key) in enumerate(route):
            hits, carried = run_stage(
                self.plan,
                stage,
                self.engines[stage.name],
                event,
                (offset, partition, ingested_at),
                carried,
                final=i == len(route) - 1,
            )
            signals.extend(hits)
        return signals

    def advance(self, watermark: float) -> list[AlertSignal]:
        return [s for engine in self.engines.values() for s in engine.advance(watermark)]
