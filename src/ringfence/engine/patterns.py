"""Patterns: ordered sequences within a time bound, and absences, per key.

``sequence``: steps in order (each an event type and an optional condition that may refer
to earlier steps, e.g. ``data.payee_id == payee.data.payee_id``) within ``within`` seconds.
``absence``: an ``after`` event not followed by an ``expect`` event within ``within``; with
no ``after``, a *heartbeat*: a key (e.g. an event source) that sends no ``expect`` event for
``within``. Absences fire from timers, on the watermark, so quiet keys still close.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from ringfence.engine.event_time import event_time_mark
from ringfence.engine.expressions import EvalContext, Expression
from ringfence.engine.keys import key_of
from ringfence.engine.rules import Output
from ringfence.events.model import Event

MAX_PARTIALS = 16


class PatternKind(StrEnum):
    """A pattern's ``kind`` in a pack (see the module docstring)."""

    SEQUENCE = "sequence"
    ABSENCE = "absence"


@dataclass(frozen=True)
class StepSpec:
    """One step: an event of one of the ``on`` types for which ``when`` holds."""

    name: str
    on: frozenset[str]
    when: Expression | None

    def matches(self, event_type: str, ctx: EvalContext) -> bool:
        return event_type in self.on and (self.when is None or bool(self.when.evaluate(ctx)))


@dataclass(frozen=True)
class PatternSpec:
    """A sequence (``steps``) or an absence (``after`` then no ``expect``) per ``by`` key."""

    id: str
    kind: PatternKind
    description: str
    by: tuple[tuple[str, ...], ...]
    within: float
    steps: tuple[StepSpec, ...]
    after: StepSpec | None
    expect: StepSpec | None
    output: Output

    @property
    def on(self) -> frozenset[str]:
        specs = [*self.steps, *(s for s in (self.after, self.expect) if s is not None)]
        return frozenset(t for s in specs for t in s.on)

    @property
    def is_heartbeat(self) -> bool:
        """An absence with no ``after``: its deadline only ever moves later (to the newest
        ``expect`` event's time plus ``within``) until it fires."""
        return self.kind == PatternKind.ABSENCE and self.after is None

    @property
    def state_name(self) -> str:
        return f"pattern:{self.id}"

    @property
    def signature(self) -> tuple[Any, ...]:
        """What defines the state: a reloaded pack keeps the state of a pattern with the same one."""
        steps = [
            (s.name, sorted(s.on), s.when.source if s.when else None)
            for s in (*self.steps, self.after, self.expect)
            if s
        ]
        return (self.kind.value, self.by, self.within, tuple(steps))  # plain values: see persisted_names

    @property
    def evidence_features(self) -> frozenset[str]:
        parts = [s.when for s in (*self.steps, self.after, self.expect) if s is not None and s.when is not None]
        return frozenset(f for e in parts for f in e.features) | self.output.title.features

    def key(self, ctx: EvalContext) -> str | None:
        return key_of(self.by, ctx)


class Partial(msgspec.Struct, array_like=True, gc=False):
    """A sequence matched up to step ``step``; ``captured`` holds each matched step's event."""

    started: float
    step: int
    captured: dict[str, dict[str, Any]]


class PatternState(msgspec.Struct, array_like=True, gc=False):
    """One key's state of one pattern."""

    seen: float
    partials: list[Partial] = []
    deadline: float | None = None
    anchor: dict[str, Any] | None = None


def snapshot(event: Event, offset: int, ingested_at: float) -> dict[str, Any]:
    """What a pattern remembers of a matched event (and shows as evidence)."""
    return {
        "event_id": event.event_id,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "source": event.source,
        "customer_id": event.customer_id,
        "data": event.data,
        "offset": offset,
        "ingested_at": ingested_at,
    }


def advance_sequence(
    spec: PatternSpec, state: PatternState, t: float, snap: dict[str, Any], ctx: Any
) -> list[dict[str, Any]] | None:
    """Fold the event of ``ctx`` (at ``t``, its ``event_time_mark``) into a sequence's partial
    matches; return the completed match's steps, if any.

    Its ``steps`` are set to each partial's captures while that partial's next step is
    checked. A partial that takes the event as its next step stays as it was too (a copy goes
    on): a decoy (a first payee, then the one paid) cannot use up the match, only the step that
    completes it does. A late event (before a partial began) neither advances nor ends that
    partial. Past ``MAX_PARTIALS``, see :func:`_bounded`.
    """
    event_type = ctx.event.type
    state.partials = [p for p in state.partials if t < p.started or t - p.started <= spec.within]
    completed: list[dict[str, Any]] | None = None
    last = len(spec.steps) - 1
    advanced: list[Partial] = []
    done: list[Partial] = []
    for partial in state.partials:
        if t < partial.started:
            continue
        step = spec.steps[partial.step + 1]
        ctx.steps = partial.captured
        if step.matches(event_type, ctx):
            captured = {**partial.captured, step.name: snap}
            if partial.step + 1 == last:
                done.append(partial)
                if completed is None:
                    completed = [captured[s.name] for s in spec.steps]
            else:
                advanced.append(Partial(partial.started, partial.step + 1, captured))
    ctx.steps = {}
    completing = {id(p) for p in done}
    state.partials = [p for p in state.partials if id(p) not in completing] + advanced
    if spec.steps[0].matches(event_type, ctx) and completed is None:
        state.partials.append(Partial(t, 0, {spec.steps[0].name: snap}))
    _bounded(state.partials)
    return completed


def _bounded(partials: list[Partial]) -> None:
    """Keep at most ``MAX_PARTIALS``, dropping the oldest partial of the step most of them are
    at (of two as crowded, the later step). A flood of one step's events (16 decoy payees)
    then pushes out only its own kind, never the partial the others branch from (the reset)."""
    while len(partials) > MAX_PARTIALS:
        held = Counter(p.step for p in partials)
        crowded = max(held, key=lambda step: (held[step], step))
        del partials[next(i for i, p in enumerate(partials) if p.step == crowded)]


def advance_absence(spec: PatternSpec, state: PatternState, t: float, snap: dict[str, Any], ctx: Any) -> bool:
    """Fold the event of ``ctx`` (at ``t``, its ``event_time_mark``) into an absence; return
    True if its deadline (re)armed."""
    event = ctx.event
    assert spec.expect is not None
    if spec.after is None:  # a heartbeat: the newest expected event sets the deadline
        newest = state.anchor is None or t >= event_time_mark(state.anchor["occurred_at"], state.anchor["ingested_at"])
        # a late event is no news: the key was heard from after it (and its deadline, were it
        # to count, would lie before the one armed, or re-arm a heartbeat that already fired)
        if newest and spec.expect.matches(event.type, ctx):
            state.anchor, state.deadline = snap, t + spec.within
            return True
        return False
    if state.deadline is not None and state.anchor is not None:
        ctx.steps = {spec.after.name: state.anchor}
        if t <= state.deadline and spec.expect.matches(event.type, ctx):
            state.anchor = state.deadline = None
        ctx.steps = {}
    if state.deadline is None and spec.after.matches(event.type, ctx):
        state.anchor, state.deadline = snap, t + spec.within
        return True
    return False


TIMER_SLACK = 1_024  # entries past twice the keys' before the timers are compacted


class Timers:
    """Deadlines of absence patterns, earliest first. Entries are checked against the
    state when they come due, so a cancelled deadline needs no removal, and a deadline
    pushed later keeps its entry, which re-arms itself when it comes due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str, str]] = []
        self._earliest: dict[tuple[str, str], float] = {}  # of each key's entries in the heap

    def add(self, deadline: float, pattern_id: str, key: str) -> None:
        """Arm ``deadline``, unless the key has an entry due no later: that one re-arms it when
        it comes due. (A cancelled deadline's entry stayed, and the key's next one was added
        beside it: a key's after and expect, alternating, added an entry a cycle until each
        came due, up to ``within`` later: 100,000 for one key in a hostile test.)"""
        earliest = self._earliest.get((pattern_id, key))
        if earliest is not None and earliest <= deadline:
            return
        self._earliest[(pattern_id, key)] = deadline
        heapq.heappush(self._heap, (deadline, pattern_id, key))
        if len(self._heap) > 2 * len(self._earliest) + TIMER_SLACK:
            # deadlines armed each earlier than the last (event times running back, within the
            # lateness) each pushed one (a review): each key's earliest entry stands for all of
            # its others, due no earlier, so only those are kept
            self._heap = [(d, p, k) for (p, k), d in self._earliest.items()]
            heapq.heapify(self._heap)

    def pop_due(self, watermark: float) -> tuple[float, str, str] | None:
        """The earliest entry before ``watermark``, removed; None when there is none."""
        if self._heap and self._heap[0][0] < watermark:
            deadline, pattern_id, key = entry = heapq.heappop(self._heap)
            if self._earliest.get((pattern_id, key)) == deadline:
                del self._earliest[(pattern_id, key)]
            return entry
        return None

    def __len__(self) -> int:
        return len(self._heap)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(PatternState)


def encode_pattern_state(state: PatternState) -> bytes:
    return _encoder.encode(state)


def decode_pattern_state(raw: bytes) -> PatternState:
    return _decoder.decode(raw)
