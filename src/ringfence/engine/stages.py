"""The engine split into keyed stages, for runtimes where no one process holds every key.

Every feature, anomaly score and pattern is kept by the owner of its key. Keys that include
``customer_id`` live with the customer (the log's own partitioning): the *customer* stage.
Every other key (a card, a device, an IP, ``global``...) is a stage of its own. An event
goes to each stage its type needs, at once and in the order it arrived (the kafka runtime's
ingest writes it to the stages topic, in the partition of each stage's key, in one
transaction), so every key sees its events in the order the one-process engine sees them. Each stage folds
the event into its own state; the stages owning features the event's rules read send their
values to a *join* keyed like the customer stage, which evaluates the rules when all have
arrived. An event whose rules read only customer state is evaluated by the customer stage.

A definition may read only the features of its own key (the stages run side by side); a
pack that does otherwise is refused with the name of the definition at fault.
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
JOIN = "join"  # where the rules of events whose features several stages keep are evaluated
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
    """The stages of a pack (the customer stage first), and the rules' join."""

    pack: RulePack
    stages: list[Stage]
    rules: Stage  # the rules alone, for the join
    _needs: dict[str, tuple[list[Stage], frozenset[str]]] = field(default_factory=dict)
    _reads: dict[str, frozenset[str]] = field(default_factory=dict)
    _defaults: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # what a key with no state shows: 0 for counts and sums, else None, whatever the time
        self._defaults = {f.name: f.value(None, 0.0) for f in self.pack.features}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def route(self, event: Event, ctx: EventContext) -> tuple[list[tuple[Stage, str]], list[str]]:
        """The stages besides the customer's that ``event`` goes to, with its key in each, and
        the stages that must send their values to the join (empty: the customer stage
        evaluates the rules itself)."""
        found = self._needs.get(event.type)
        if found is None:
            found = self._needs[event.type] = self._stages_for(event.type)
        stages, contributing = found
        out = []
        for stage in stages:
            key = stage.key(event, ctx)
            if key is not None:
                out.append((stage, key))
        joined = [s.name for s, _ in out if s.name in contributing]
        return out, [CUSTOMER, *joined] if joined else []

    def reads(self, event_type: str) -> frozenset[str]:
        """The features and scores the rules on ``event_type`` read."""
        found = self._reads.get(event_type)
        if found is None:
            reads: set[str] = set()
            for rule in self.pack.rules:
                if event_type in rule.on:
                    reads |= set(rule.evidence_features) | _output_reads(rule.output)
            found = self._reads[event_type] = frozenset(reads)
        return found

    def _stages_for(self, event_type: str) -> tuple[list[Stage], frozenset[str]]:
        reads = self.reads(event_type)
        needed, contributing = [], set()
        for stage in self.stages[1:]:
            specs: list[Spec] = [*stage.pack.features, *stage.pack.anomalies, *stage.pack.patterns]
            if stage.owns & reads:
                contributing.add(stage.name)
            if stage.owns & reads or any(_applies(s, event_type) for s in specs):
                needed.append(stage)
        return needed, frozenset(contributing)

    def defaults(self, carried: Mapping[str, Any], own: frozenset[str]) -> dict[str, Any]:
        """``carried``, with what a key with no state shows for every feature neither it nor
        ``own`` (the evaluating stage's) has: the values of stages the event did not visit."""
        return {**{k: v for k, v in self._defaults.items() if k not in own}, **carried}


def _applies(spec: Spec, event_type: str) -> bool:
    on = spec.on
    return on is None or event_type in on


def plan_stages(pack: RulePack) -> StagePlan:
    """Split ``pack`` into keyed stages; raise RulePackError if a definition reads another key's features."""
    specs: list[Spec] = [*pack.features, *pack.anomalies, *pack.patterns]
    by_stage: dict[str, list[Spec]] = {CUSTOMER: []}
    keys: dict[str, KeyPaths | None] = {CUSTOMER: None}
    owner = {s.name: stage_of(s.by) for s in specs if not isinstance(s, PatternSpec)}
    for spec in specs:
        name = stage_of(spec.by)
        by_stage.setdefault(name, []).append(spec)
        keys.setdefault(name, spec.by if name != CUSTOMER else None)
        foreign = sorted(f for f in reads_of(spec) if owner.get(f, name) != name)
        if foreign:
            raise RulePackError(
                f"reads {', '.join(foreign)}, kept by another key: the kafka runtime keeps each key's "
                "state apart, so a definition may read only features of its own key (rules may read any)",
                _label(spec),
            )
    order = [CUSTOMER, *sorted(set(by_stage) - {CUSTOMER})]
    stages = [_stage(pack, name, keys[name], by_stage[name]) for name in order]
    rules = _stage(pack, JOIN, None, [])
    return StagePlan(pack, stages, rules)


def refuse_shared_stage_names(pack: RulePack) -> None:
    """Raise RulePackError if two keys of ``pack`` would share a stage (its topic's name and its
    tasks): ``by: source`` and ``by: data.source`` are both ``source``, ``[data.a, data.b]``
    and ``data.a-b`` both ``a-b``, ``data.customer`` the customer's, ``data.join`` the join's.
    The stage takes the first key's partitions, so the second's state was split across them
    (its counts missed). For a pack coming in: one stored before still runs as it did."""
    first: dict[str, KeyPaths] = {}
    specs: list[Spec] = [*pack.features, *pack.anomalies, *pack.patterns]
    for spec in specs:
        name = stage_of(spec.by)
        if name == CUSTOMER and ("customer_id",) in spec.by:
            continue  # every key holding the customer's is the customer stage's, by design
        taken = first.setdefault(name, spec.by)
        if name in (CUSTOMER, JOIN) or (name == "global" and spec.by) or taken != spec.by:
            shown = " and ".join(sorted({_shown(taken), _shown(spec.by)}))
            raise RulePackError(
                f"its key ({_shown(spec.by)}) is stage {name!r} in the kafka runtime, which "
                f"{'is reserved' if taken == spec.by else f'keys by {shown}'}: name the field otherwise",
                _label(spec),
            )


def _shown(by: KeyPaths) -> str:
    return "[" + ", ".join(".".join(path) for path in by) + "]"


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
    report_values: bool = False,
) -> tuple[list[AlertSignal], dict[str, Any]]:
    """Fold ``event`` into ``stage``'s ``engine`` (its log offset, partition and ingest time
    in ``position``); with ``final``, evaluate the rules too, on ``carried`` (the values the
    other stages computed) and this stage's own. With ``report_values`` (a stage sending its
    values to the join), also return this stage's values the event's rules read."""
    if final:  # rules see what a key with no state shows for the stages the event skipped
        carried = plan.defaults(carried, stage.owns)
    offset, partition, ingested_at = position
    report = () if final or not report_values else stage.owns & plan.reads(event.type)
    return engine.process_stage(event, offset, partition, ingested_at, carried, final, report)
