"""The differential test of the compiled core (issue 17, "same semantics"): the reference
:class:`~ringfence.engine.engine.Engine` and a candidate engine (by default the native one)
fed the same events side by side.

After every event the alert signals are compared exactly (every field, floats to the bit,
``1`` is not ``1.0``); periodically the changed state rows (decoded with the reference
decoders), feature values of the keys seen, counters, watermarks and timers. The run goes
through what a deployment goes through: out-of-order and late events, several partitions,
absence timers fired by watermarks, expiry, list edits, a hot reload that changes one
definition and keeps the others, and a restore of each engine from the *other* engine's
checkpoint. A third of the events reach the candidate through ``process``, a third through
``process_raw`` (the stored JSON: the core's fast path), and a third in runs through
``process_raw_many`` (what a processor's batch calls), their signals compared when the run ends.

``run_differential`` runs the simulator's traffic (every scenario) through the default pack
and :data:`COVERAGE_PACK`; ``ringfence bench`` calls it for the full-size run, and
tests/engine/test_native_differential.py in a short mode. :class:`Pair` is the comparison
itself, which tests/engine/test_native_hypothesis.py drives with generated packs and events.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import re
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from ringfence.engine.anomaly import decode_zstate
from ringfence.engine.engine import Engine
from ringfence.engine.features import decode_state
from ringfence.engine.native import make_engine
from ringfence.engine.pack import RulePack, load_pack, load_pack_file
from ringfence.engine.patterns import decode_pattern_state
from ringfence.engine.rules import AlertSignal
from ringfence.events.decode import validate_event
from ringfence.events.model import Event, encode_event
from ringfence.simulate import Traffic

Factory = Callable[[RulePack, float], Engine]
Fields = dict[str, Any]  # an event as plain values: what features_of and the reports show

START = 1_800_000_000.0  # event time of the simulated traffic (2027-01-15)
# everyday events per second of event time; partner feeds add 4/s and scenarios their bursts.
# At 1/s, 20k events span over an hour: every detection of both packs fires; 5/s keys are busier
RATE_PER_S = 5.0
FRAUD_RATE = 0.05  # a scenario every ~20 everyday events: each of the 26 scenarios many times a run
DORMANT = 8  # customers with old history only, for aml_dormant_reactivated
PARTITIONS = 3
SHUFFLE_WINDOW = 12  # events are delivered up to this many positions out of order
LATE_FRACTION = 0.01  # ... and this fraction much later: behind their partition's watermark
LATE_DELAY = (150, 800)  # positions a late event is held back: tens of seconds, past the lateness
CHECK_EVERY = 400  # events between state comparisons
ADVANCE_EVERY = 97
MAX_RUN = 24  # the most events in one run through the candidate's process_raw_many
IDLE_S = 30.0  # the most an explicit advance moves past the events' watermark
EXPIRE_EVERY = 1_500
RECENT = 48  # events whose keys' feature values each check compares
MAX_SHOWN = 4_000  # characters of one value in a mismatch report


def native_factory(pack: RulePack, allowed_lateness_s: float) -> Engine:
    """The candidate by default: the compiled core (a RulePackError if it cannot run ``pack``)."""
    return make_engine(pack, allowed_lateness_s, engine="native")


# -- exact comparison ----------------------------------------------------------------------------


def differences(expected: Any, got: Any, path: str = "$", limit: int = 12) -> list[str]:
    """Where two plain values differ, strictly: types must match (``1`` vs ``1.0``, ``True``
    vs ``1``), floats must be the same double (NaN matches NaN, ``-0.0`` does not match ``0.0``)."""
    out: list[str] = []
    _diff(expected, got, path, out, limit)
    return out


def _diff(a: Any, b: Any, path: str, out: list[str], limit: int) -> None:
    if len(out) >= limit:
        return
    if type(a) is not type(b):
        out.append(f"{path}: expected {_short(a)} ({type(a).__name__}), got {_short(b)} ({type(b).__name__})")
    elif isinstance(a, dict):
        for k in sorted(a.keys() | b.keys(), key=repr):
            if k not in b:
                out.append(f"{path}.{k}: missing from the candidate (expected {_short(a[k])})")
            elif k not in a:
                out.append(f"{path}.{k}: only in the candidate ({_short(b[k])})")
            else:
                _diff(a[k], b[k], f"{path}.{k}", out, limit)
    elif isinstance(a, list | tuple):
        if len(a) != len(b):
            out.append(f"{path}: expected {len(a)} items, got {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _diff(x, y, f"{path}[{i}]", out, limit)
    elif isinstance(a, float):
        same = a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
        if not (same or (math.isnan(a) and math.isnan(b))):
            out.append(f"{path}: expected {a!r}, got {b!r}")
    elif a != b:
        out.append(f"{path}: expected {_short(a)}, got {_short(b)}")


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _shown(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=repr, allow_nan=True)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + f"... ({len(text)} chars)"


def signals_of(signals: Iterable[AlertSignal]) -> list[Any]:
    """Signals as plain values, as the alert pipeline stores them."""
    return [msgspec.to_builtins(s) for s in signals]


def decoded_rows(rows: Iterable[tuple[str, str, bytes | None]]) -> dict[str, Any]:
    """State rows from ``take_changes`` decoded with the reference decoders, by name and key."""
    out: dict[str, Any] = {}
    for name, key, raw in rows:
        label = f"{name} {key!r}"
        if label in out:
            out[label + " (again)"] = "the same row twice in one take_changes"
        if raw is None:
            out[label] = None
        elif name.startswith("pattern:"):
            out[label] = msgspec.to_builtins(decode_pattern_state(raw))
        elif name.startswith("anomaly:"):
            out[label] = msgspec.to_builtins(decode_zstate(raw))
        else:
            out[label] = msgspec.to_builtins(decode_state(raw))
    return out


def fields_of(event: Event) -> Fields:
    """An event as plain values (its fields are the keys ``features_of`` looks up)."""
    fields: Fields = msgspec.to_builtins(event)
    return fields


# -- the pair of engines ---------------------------------------------------------------------------


@dataclass
class Mismatch:
    """The first place the candidate differed from the reference, with what a person needs to
    reproduce it: the event, both outputs, their differences and both engines' feature values."""

    step: str
    diffs: list[str]
    expected: Any
    got: Any
    index: int | None = None  # of the event in the run (None: before the first)
    event: Fields | None = None
    position: dict[str, Any] = field(default_factory=dict)  # offset, partition, ingested_at
    features: dict[str, Any] = field(default_factory=dict)  # reference / candidate features_of
    context: str = ""  # the pack and seed, filled in by the run

    def __str__(self) -> str:
        lines = [f"MISMATCH in {self.step}" + (f" ({self.context})" if self.context else "")]
        if self.event is not None:
            lines.append(f"after event #{self.index} {_shown(self.position)}: {_shown(self.event)}")
        lines += ["differences:", *(f"  {d}" for d in self.diffs)]
        lines += [f"expected (reference): {_shown(self.expected)}", f"got (candidate): {_shown(self.got)}"]
        lines += [f"features ({side}): {_shown(values)}" for side, values in self.features.items()]
        return "\n".join(lines)


class Diverged(Exception):
    """The candidate engine differs from the reference (see ``mismatch``)."""

    def __init__(self, mismatch: Mismatch) -> None:
        super().__init__(str(mismatch))
        self.mismatch = mismatch


@dataclass
class Queued:
    """An event the reference ran that the candidate runs later, in a run of them."""

    body: bytes
    offset: int
    partition: int
    ingested_at: float
    expected: list[AlertSignal]  # the reference's signals
    behind: float | None  # the watermark it was behind on the reference
    index: int  # its place in the run, and the rest of what a mismatch reports of it
    event: Event
    position: dict[str, Any]


@dataclass
class Counts:
    """What a run exercised."""

    events: int = 0
    raw: int = 0  # of them through the candidate's process_raw
    batched: int = 0  # of those, in runs through its process_raw_many
    late: int = 0
    signals: int = 0
    timer_signals: int = 0  # fired by advance()
    checks: int = 0
    rows: int = 0  # state rows compared
    expired: int = 0
    reloads: int = 0
    restores: int = 0
    list_edits: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Pair:
    """The reference engine and a candidate over the same pack, driven together; every method
    raises :class:`Diverged` at the first difference. ``ref_store``/``cand_store`` are each
    engine's checkpoint (every state row ``take_changes`` reported), for :meth:`cross_restore`."""

    def __init__(self, pack: RulePack, candidate: Factory = native_factory, allowed_lateness_s: float = 5.0) -> None:
        self.pack = pack
        self.factory = candidate
        self.lateness = allowed_lateness_s
        self.ref = Engine(pack, allowed_lateness_s)
        self.cand = candidate(pack, allowed_lateness_s)
        self.ref_store: dict[tuple[str, str], bytes] = {}
        self.cand_store: dict[tuple[str, str], bytes] = {}
        self.lists: dict[str, frozenset[str]] = {}  # edited since the pack loaded
        self.counts = Counts()
        self.detections: Counter[str] = Counter()  # signals by detection, timers' included
        self.index: int | None = None
        self.last: Event | None = None
        self.position: dict[str, Any] = {}
        self._run: list[Queued] = []  # events the candidate has yet to run in one process_raw_many

    # -- driving ---------------------------------------------------------------------------------

    def process(
        self, event: Event, offset: int, partition: int, ingested_at: float, *, raw: bool = False, batched: bool = False
    ) -> list[AlertSignal]:
        """One event through both engines (the candidate's ``process_raw`` with ``raw``, which
        also answers the watermark a late event was behind; with ``batched`` too, in a run of
        events through ``process_raw_many``, which runs before anything else touches the
        candidate); the reference's signals."""
        if not (raw and batched):
            self.flush()
        self.index = index = self.counts.events
        self.last, self.position = event, {"offset": offset, "partition": partition, "ingested_at": ingested_at}
        self.counts.events += 1
        mark = self.ref.watermark(partition)
        behind = mark if event.occurred_at < mark else None
        expected = self.ref.process(event, offset, partition, ingested_at)
        self.counts.late += behind is not None
        self.counts.signals += len(expected)
        self.detections.update(s.rule_id for s in expected)
        if raw and batched:
            body = encode_event(event)
            queued = Queued(body, offset, partition, ingested_at, expected, behind, index, event, self.position)
            self._run.append(queued)
            if len(self._run) >= MAX_RUN:
                self.flush()
            return expected
        step = "process_raw" if raw else "process"
        try:
            if raw:
                got, got_behind = self.cand.process_raw(encode_event(event), offset, partition, ingested_at)
                self.counts.raw += 1
            else:
                got, got_behind = self.cand.process(event, offset, partition, ingested_at), behind
        except Exception as exc:  # the candidate failing where the reference did not is a difference
            raise self._diverged(step, ["the candidate raised"], signals_of(expected), repr(exc)) from exc
        self._same(step, [signals_of(expected), behind], [signals_of(got), got_behind])
        return expected

    def flush(self) -> None:
        """Run the queued events through the candidate's ``process_raw_many``: the same signals
        in the same order, and the same events behind the same watermarks. Every other method
        flushes first; call it last if nothing else comes after the last event."""
        run, self._run = self._run, []
        if not run:
            return
        first = run[0]  # a mismatch is reported at the run's first event, its range in the step
        self.index, self.last, self.position = first.index, first.event, first.position
        expected = [s for q in run for s in q.expected]
        late = [[i, q.behind] for i, q in enumerate(run) if q.behind is not None]
        step = f"process_raw_many of events #{first.index} to #{run[-1].index}"
        bodies, offsets = [q.body for q in run], [q.offset for q in run]
        partitions, ingested_ats = [q.partition for q in run], [q.ingested_at for q in run]
        try:
            got, got_late = self.cand.process_raw_many(bodies, offsets, partitions, ingested_ats)
        except Exception as exc:
            raise self._diverged(step, ["the candidate raised"], signals_of(expected), repr(exc)) from exc
        self._same(step, [signals_of(expected), late], [signals_of(got), [list(x) for x in got_late]])
        self.counts.raw += len(run)
        self.counts.batched += len(run)

    def advance(self, mark: float | None = None) -> list[AlertSignal]:
        """Fire the absence timers due before ``mark`` (default: the events' watermark)."""
        self.flush()
        expected, got = self.ref.advance(mark), self.cand.advance(mark)
        self._same(f"advance({mark!r})", signals_of(expected), signals_of(got))
        self.counts.timer_signals += len(expected)
        self.detections.update(s.rule_id for s in expected)
        return expected

    def expire(self, mark: float) -> None:
        self.flush()
        expected, got = self.ref.expire(mark), self.cand.expire(mark)
        self._same(f"expire({mark!r})", expected, got)
        self.counts.expired += expected

    def set_list(self, name: str, values: Iterable[str]) -> None:
        """Edit a list at run time, as ``PUT /v1/lists/{name}`` does."""
        self.flush()
        frozen = frozenset(values)
        self.lists[name] = frozen
        for engine in (self.ref, self.cand):
            engine.set_list(name, frozen)
        self.counts.list_edits += 1

    def check(self, seen: Sequence[Fields] = (), at: float | None = None) -> None:
        """Compare the state rows changed since the last check, counters, watermarks, timers,
        and the feature values of the keys of ``seen`` events at ``at`` (default: the newest time)."""
        self.flush()
        self.counts.checks += 1
        ref_rows, cand_rows = self.ref.take_changes(), self.cand.take_changes()
        self._same("take_changes", decoded_rows(ref_rows), decoded_rows(cand_rows))
        self.counts.rows += len(ref_rows)
        for store, rows in ((self.ref_store, ref_rows), (self.cand_store, cand_rows)):
            for name, key, raw in rows:
                if raw is None:
                    store.pop((name, key), None)
                else:
                    store[(name, key)] = raw
        labelled = [(f"{n} {k!r}", n, k) for n, k, _ in ref_rows]
        self._same(
            "timer_of",
            {label: self.ref.timer_of(n, k) for label, n, k in labelled},
            {label: self.cand.timer_of(n, k) for label, n, k in labelled},
        )
        self._same("counters", self._counters(self.ref), self._counters(self.cand))
        newest = at if at is not None else self.ref.watermark() + self.lateness
        for fields in seen:
            self._same(
                f"features_of(at={newest!r})",
                self.ref.features_of(fields, newest),
                self.cand.features_of(fields, newest),
            )

    def reload(self, pack: RulePack) -> None:
        """Hot-reload both engines with ``pack`` (checkpointing first, as runtimes do)."""
        self.check()
        self._same("dropped_state_names", self.ref.dropped_state_names(pack), self.cand.dropped_state_names(pack))
        kind = type(self.cand)
        self.ref, self.cand = self.ref.reloaded(pack), self.cand.reloaded(pack)
        self._same("reloaded: the candidate's engine", kind.__name__, type(self.cand).__name__)
        self.pack = pack
        self.counts.reloads += 1
        self.check()

    def cross_restore(self) -> None:
        """Replace each engine by a fresh one restored from the *other* engine's checkpoint,
        as after a restart that switched engines; both must then go on identically."""
        self.check()
        marks = dict(self.ref.max_event_time), dict(self.cand.max_event_time)
        ref, cand = Engine(self.pack, self.lateness), self.factory(self.pack, self.lateness)
        ref.restore([(n, k, raw) for (n, k), raw in self.cand_store.items()], marks[1])
        cand.restore([(n, k, raw) for (n, k), raw in self.ref_store.items()], marks[0])
        for name, values in self.lists.items():
            ref.set_list(name, values)
            cand.set_list(name, values)
        self.ref, self.cand = ref, cand
        self.counts.restores += 1
        self._same("state_size after restore", self.ref.state_size(), self.cand.state_size())

    # -- comparing -------------------------------------------------------------------------------

    def _counters(self, engine: Engine) -> dict[str, Any]:
        partitions = sorted(engine.max_event_time)
        return {
            "state_size": engine.state_size(),
            "late_events": engine.late_events,
            "hits": sorted([str(rule), str(mode), n] for (rule, mode), n in engine.hits.items() if n),
            "max_event_time": [[p, engine.max_event_time[p]] for p in partitions],
            "watermarks": [engine.watermark(p) for p in partitions] + [engine.watermark()],
            "lists": {name: sorted(values) for name, values in sorted(engine.lists.items())},
            "persisted_names": engine.persisted_names,
            "horizons": {n: [engine.horizon_of(n), engine.is_heartbeat(n)] for n in engine.persisted_names.values()},
        }

    def _same(self, step: str, expected: Any, got: Any) -> None:
        found = differences(expected, got)
        if found:
            if isinstance(expected, dict) and isinstance(got, dict):  # show the entries that differ
                keys = [k for k in expected.keys() | got.keys() if differences(expected.get(k), got.get(k))]
                expected, got = {k: expected.get(k) for k in keys}, {k: got.get(k) for k in keys}
            raise self._diverged(step, found, expected, got)

    def _diverged(self, step: str, found: list[str], expected: Any, got: Any) -> Diverged:
        fields = fields_of(self.last) if self.last is not None else None
        features: dict[str, Any] = {}
        if fields is not None and self.last is not None:
            for side, engine in (("reference", self.ref), ("candidate", self.cand)):
                try:
                    features[side] = engine.features_of(fields, self.last.occurred_at)
                except Exception as exc:  # a report of a failure must not fail itself
                    features[side] = repr(exc)
        return Diverged(Mismatch(step, found, expected, got, self.index, fields, dict(self.position), features))


# -- the simulator's traffic, disordered ---------------------------------------------------------------


def simulated(seed: int, count: int, customers: int, rate_per_s: float) -> tuple[Iterator[Event], Traffic]:
    """``count`` events of the simulator's traffic (every scenario injected), validated as ingest
    validates them, in time order; and the traffic, whose labels say which scenarios ran."""
    traffic = Traffic(seed=seed, customers=customers, fraud_rate=FRAUD_RATE, source_prefix=f"d{seed}", dormant=DORMANT)

    def events() -> Iterator[Event]:
        for raw in traffic.stream(start=START, rate_per_s=rate_per_s, count=count):
            at = datetime.fromisoformat(raw["occurred_at"]).timestamp()
            yield validate_event(msgspec.json.encode(raw), now=at)

    return events(), traffic


def disordered(events: Iterable[Event], rng: random.Random) -> Iterator[Event]:
    """``events`` shuffled within a bounded window, with a fraction held back far enough to
    arrive behind the watermark (streamed: memory stays bounded however long the run)."""
    held: list[tuple[float, int, Event]] = []
    for i, event in enumerate(events):
        late = rng.random() < LATE_FRACTION
        due = i + (rng.randint(*LATE_DELAY) if late else rng.uniform(0, SHUFFLE_WINDOW))
        heapq.heappush(held, (due, i, event))
        while held and held[0][0] <= i:
            yield heapq.heappop(held)[2]
    while held:
        yield heapq.heappop(held)[2]


def reload_variant(pack: RulePack) -> RulePack:
    """``pack`` with a new version and one feature's window doubled (halved past 200 days), so a
    reload keeps every other definition's state and starts that one afresh."""
    text = re.sub(r"(?m)^version:.*$", f'version: "{pack.version}-reloaded"', pack.text, count=1)
    for spec in pack.features:
        if spec.window is None:
            continue
        window = spec.window * 2 if spec.window <= 200 * 86400 else spec.window / 2
        block = re.search(rf"(?ms)^([ \t]*)- name: {re.escape(spec.name)}[ \t]*$(.*?)(?=^\1- |^\S|\Z)", text)
        if block is None:
            continue
        body = re.sub(r"(?m)^(\s*window:\s*)\S+", rf"\g<1>{int(window)}s", block.group(2), count=1)
        variant = load_pack(text[: block.start(2)] + body + text[block.end(2) :])
        changed = [f.name for f, g in zip(pack.features, variant.features, strict=True) if f.signature != g.signature]
        if changed == [spec.name]:
            return variant
    return load_pack(text)


def _list_values(recent: Sequence[Fields]) -> set[str]:
    """Text values of recent events' data: what a list edit adds, so it changes what rules see."""
    out: set[str] = set()
    stack: list[Any] = [f.get("data") for f in recent[-3:]]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack += value.values()
        elif isinstance(value, str):
            out.add(value)
    return out


@dataclass
class RunResult:
    """One pack over one seed's traffic."""

    pack: str
    seed: int
    counts: Counts
    scenarios: Counter[str]  # injected
    detections: Counter[str]  # signals by detection
    seconds: float
    mismatch: Mismatch | None = None


def run_simulated(
    label: str,
    pack: RulePack,
    seed: int,
    count: int,
    *,
    candidate: Factory = native_factory,
    customers: int = 400,
    rate_per_s: float = RATE_PER_S,
    allowed_lateness_s: float = 5.0,
) -> RunResult:
    """The simulator's traffic of ``seed`` through ``pack`` on both engines (see the module)."""
    started = time.monotonic()
    rng = random.Random(seed)  # nosec B311 # noqa: S311 - a test schedule, not security
    events, traffic = simulated(seed, count, customers, rate_per_s)
    pair = Pair(pack, candidate, allowed_lateness_s)
    recent: deque[Fields] = deque(maxlen=RECENT)
    mismatch = None
    try:
        for i, event in enumerate(disordered(events, rng)):
            if i == count // 3:
                pair.reload(reload_variant(pair.pack))
            elif i == count // 2 and pair.pack.lists:
                name = sorted(pair.pack.lists)[0]
                pair.set_list(name, pair.ref.lists[name] | _list_values(list(recent)))
            elif i == 2 * count // 3:
                pair.cross_restore()
            partition = zlib.crc32((event.customer_id or event.source).encode()) % PARTITIONS
            ingested_at = event.occurred_at + rng.uniform(0.001, 3.0)
            route = rng.random()  # the candidate's process, process_raw, or process_raw_many
            pair.process(event, i + 1, partition, ingested_at, raw=route >= 0.34, batched=route >= 0.67)
            recent.append(fields_of(event))
            if i % ADVANCE_EVERY == 0:
                # runtimes also move event time on with the wall clock while sources are quiet
                pair.advance(None if rng.random() < 0.7 else pair.ref.watermark() + rng.uniform(0, IDLE_S))
            if (i + 1) % EXPIRE_EVERY == 0:
                pair.expire(pair.ref.watermark())
            if (i + 1) % CHECK_EVERY == 0:
                pair.check(list(recent))
        newest = pair.ref.watermark()
        pair.check(list(recent))
        pair.advance(newest + 86400)
        pair.check(list(recent), newest + 86400)
        pair.expire(newest + 100 * 86400)
        pair.check(list(recent), newest + 100 * 86400)
    except Diverged as exc:
        mismatch = exc.mismatch
        mismatch.context = f"pack {label}, seed {seed}"
    scenarios = Counter(label.scenario for label in traffic.labels)
    return RunResult(label, seed, pair.counts, scenarios, pair.detections, time.monotonic() - started, mismatch)


# -- the report ------------------------------------------------------------------------------------


@dataclass
class DifferentialReport:
    """Every run's counts, and the mismatch each failed run stopped at (printable)."""

    runs: list[RunResult]

    @property
    def ok(self) -> bool:
        return all(r.mismatch is None for r in self.runs)

    @property
    def mismatches(self) -> list[Mismatch]:
        return [r.mismatch for r in self.runs if r.mismatch is not None]

    @property
    def first_mismatch(self) -> Mismatch | None:
        return next(iter(self.mismatches), None)

    @property
    def totals(self) -> Counts:
        total = Counts()
        for r in self.runs:
            total.add(r.counts)
        return total

    @property
    def scenarios(self) -> Counter[str]:
        """Scenarios injected, over all runs."""
        return sum((r.scenarios for r in self.runs), Counter())

    @property
    def detections(self) -> Counter[str]:
        """Signals by detection, over all runs."""
        return sum((r.detections for r in self.runs), Counter())

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (``ringfence bench`` writes them)."""
        first = self.first_mismatch
        return {
            "identical": self.ok,
            "totals": asdict(self.totals),
            "runs": [
                {
                    "pack": r.pack,
                    "seed": r.seed,
                    "seconds": round(r.seconds, 2),
                    "counts": asdict(r.counts),
                    "scenarios": dict(sorted(r.scenarios.items())),
                    "detections": dict(sorted(r.detections.items())),
                    "mismatch": None if r.mismatch is None else str(r.mismatch),
                }
                for r in self.runs
            ],
            "first_mismatch": None if first is None else str(first),
        }

    def __str__(self) -> str:
        lines = []
        for r in self.runs:
            c = r.counts
            verdict = "ok" if r.mismatch is None else f"MISMATCH at event #{r.mismatch.index} ({r.mismatch.step})"
            lines.append(
                f"{r.pack:>10} seed {r.seed:<4} {c.events:>9} events ({c.raw} raw, {c.batched} in runs, {c.late} late) "
                f"{c.signals + c.timer_signals:>7} signals {c.rows:>8} rows {c.checks:>4} checks "
                f"{r.seconds:6.1f} s  {verdict}"
            )
        t = self.totals
        lines.append(
            f"total: {t.events} events, {t.signals} signals, {t.timer_signals} from timers, {t.rows} state rows, "
            f"{t.reloads} reloads, {t.restores} cross-restores, {len(self.scenarios)} scenarios, "
            f"{len(self.detections)} detections fired: "
            + ("identical" if self.ok else f"{len(self.mismatches)} run(s) differ")
        )
        first = self.first_mismatch
        return "\n".join(lines + ([] if first is None else ["", str(first)]))


def default_packs() -> list[tuple[str, RulePack]]:
    """The packs the differential run uses: the packaged default and :data:`COVERAGE_PACK`."""
    return [("default", load_pack_file(None)), ("coverage", load_pack(COVERAGE_PACK))]


def run_differential(
    events: int,
    seeds: list[int],
    *,
    packs: Sequence[tuple[str, RulePack]] | None = None,
    candidate: Factory = native_factory,
    customers: int = 400,
    rate_per_s: float = RATE_PER_S,
    progress: Callable[[str], None] | None = None,
) -> DifferentialReport:
    """``events`` simulated events of each seed through each pack on the reference engine and
    ``candidate`` (the compiled core by default), compared as the module says."""
    runs = []
    for label, pack in packs if packs is not None else default_packs():
        for seed in seeds:
            result = run_simulated(
                label, pack, seed, events, candidate=candidate, customers=customers, rate_per_s=rate_per_s
            )
            runs.append(result)
            if progress is not None:
                progress(str(DifferentialReport([result])).splitlines()[0])
    return DifferentialReport(runs)


# Every aggregate, score and pattern kind, and most of the expression language, over the
# simulator's traffic: what the default pack leaves out. Thresholds are set so each fires.
COVERAGE_PACK = """
version: "diff-coverage-1"
description: Differential test coverage - every aggregate, score and pattern kind over simulated traffic.
lists:
  watched_countries: [FR, DE]
  big_mccs: ["7995", "5732"]
  slow_services: [reports]
features:
  - name: spend_sum_10m
    on: [card.authorization, transfer.initiated]
    by: [customer_id, data.currency]
    agg: sum
    of: data.amount
    window: 10m
  - name: spend_avg_1h
    on: [card.authorization]
    by: customer_id
    agg: avg
    of: data.amount
    window: 1h
    where: data.approved
  - name: spend_avg_life
    on: [card.authorization]
    by: customer_id
    agg: avg
    of: data.amount
  - name: spend_min_5m
    on: [card.authorization]
    by: data.card_id
    agg: min
    of: data.amount
    window: 5m
  - name: spend_max_life
    on: [card.authorization]
    by: data.card_id
    agg: max
    of: data.amount
  - name: spend_min_life
    on: [card.authorization, transfer.initiated]
    by: customer_id
    agg: min
    of: data.amount
  - name: spend_max_30m
    on: [card.authorization, transfer.initiated]
    by: customer_id
    agg: max
    of: data.amount
    window: 30m
  - name: spend_stats_1h
    on: [card.authorization]
    by: customer_id
    agg: stats
    of: data.amount
    window: 1h
  - name: spend_stats_life
    on: [card.authorization]
    by: customer_id
    agg: stats
    of: data.amount
  - name: spend_ewma
    on: [card.authorization]
    by: customer_id
    agg: ewma
    alpha: 0.3
    of: data.amount
  - name: spend_p90_30m
    on: [card.authorization]
    by: customer_id
    agg: quantile
    q: 0.9
    of: data.amount
    window: 30m
  - name: merchants_life
    on: [card.authorization]
    by: customer_id
    agg: distinct_count
    of: data.merchant.id
  - name: first_country
    on: [card.authorization]
    by: customer_id
    agg: first
    of: data.merchant.country
  - name: first_amount_1h
    on: [card.authorization]
    by: data.card_id
    agg: first
    of: data.amount
    window: 1h
  - name: last_channel
    on: [card.authorization]
    by: data.card_id
    agg: last
    of: data.channel
  - name: last_balance
    on: [balance.updated]
    by: customer_id
    agg: last
    of: data.balance
    window: 1h
  - name: balance_min_1h
    on: [balance.updated]
    by: [customer_id, data.currency]
    agg: min
    of: data.balance
    window: 1h
  - name: events_global_1m
    by: global
    agg: count
    window: 1m
  - name: logins_life
    on: [login.succeeded]
    by: customer_id
    agg: count
  - name: amount_total_life
    on: [deposit.received, transfer.initiated]
    by: customer_id
    agg: sum
    of: "data.amount if type == 'deposit.received' else -data.amount"
  - name: latency_avg_5m
    on: [api.request]
    by: data.service
    agg: avg
    of: data.latency_ms
    window: 5m
    where: data.status < 500
  - name: since_transfer
    on: [transfer.initiated]
    by: customer_id
    agg: time_since
    window: 1h
  - name: ips_by_device_1h
    on: [login.succeeded, login.failed]
    by: data.device_id
    agg: distinct_count
    of: data.ip
    window: 1h
anomaly:
  - name: latency_z
    kind: robust_zscore
    on: [api.request]
    by: [data.service, data.endpoint]
    of: data.latency_ms
    min_samples: 5
    samples: 16
  - name: spend_sum_z
    kind: robust_zscore
    on: [card.authorization]
    by: customer_id
    of: spend_sum_10m
    where: data.channel != 'atm'
    min_samples: 3
    samples: 8
    window: 1h
rules:
  - id: spend_above_average
    on: [card.authorization]
    when: data.amount > 2 * coalesce(spend_avg_life, 1e9) and spend_stats_life.count >= 3
    severity: medium
    audience: fraud
    title: "Spend {data.amount} against an average of {spend_avg_life} ({spend_stats_life.count} payments)"
    summary: "std {spend_stats_life.std}, mean {spend_stats_life.mean}, ewma {spend_ewma}"
    dedup: "{customer_id}:{data.currency}"
    labels: {avg_1h: "{spend_avg_1h}", p90: "{spend_p90_30m}"}
  - id: spend_outlier_1h
    on: [card.authorization]
    when: spend_stats_1h.std > 0 and (data.amount - spend_stats_1h.mean) / spend_stats_1h.std > 1.5
    severity: low
    audience: fraud
    mode: shadow
    title: "{data.amount} is {spend_stats_1h.count} payments' mean {spend_stats_1h.mean} + {spend_stats_1h.std} x"
  - id: ewma_jump
    on: [card.authorization]
    when: "(data.amount > spend_ewma * 1.8) if spend_ewma != null else false"
    severity: info
    audience: fraud
    title: "ewma {spend_ewma}, min 5m {spend_min_5m}, max {spend_max_life}, max 30m {spend_max_30m}"
    dedup: "{data.card_id}"
  - id: round_amount
    on: [card.authorization, transfer.initiated, deposit.received]
    when: data.amount % 10 == 0 or round(data.amount / 3, 2) * 3 == data.amount
    severity: info
    audience: aml
    title: "Round {data.amount} {data.currency}: total {amount_total_life}, lowest {spend_min_life}"
  - id: new_first_country
    on: [card.authorization]
    when: >
      first_country != null and first_country != data.merchant.country and
      lower(data.merchant.country) in ['fr', 'de', 'gb', 'sg', 'kp']
    severity: low
    audience: fraud  # it quotes a card's feature: a customer is told only what is keyed by them
    title: "First seen in {first_country}, now {data.merchant.country}; first amount {first_amount_1h}"
  - id: channel_switch
    on: [card.authorization]
    when: last_channel != null and upper(last_channel) != upper(data.channel) and len(data.channel) > 3
    severity: info
    audience: fraud
    title: "{last_channel} then {data.channel}"
    dedup: "{data.card_id}:{data.channel}"
  - id: watched_country
    on: [card.authorization]
    when: >
      data.merchant.country in lists.watched_countries and data.merchant.mcc not in lists.big_mccs
      and not data.approved
    severity: low
    audience: fraud
    title: "Declined in watched {data.merchant.country} ({data.decline_reason})"
  - id: at_p90
    on: [card.authorization]
    when: spend_p90_30m != null and data.amount >= spend_p90_30m and spend_stats_1h.count > 4
    severity: info
    audience: fraud
    title: "{data.amount} at or above the p90 {spend_p90_30m}"
  - id: busy_minute
    on: [api.request, login.failed]
    when: events_global_1m % 50 == 0 or 0 < events_global_1m <= 3
    severity: info
    audience: ops
    title: "{events_global_1m} events in the last minute"
    dedup: global
  - id: balance_drop
    on: [balance.updated]
    when: last_balance != null and data.balance < last_balance - 1000 and balance_min_1h <= data.balance
    severity: low
    audience: customer
    title: "Balance {data.balance} after {last_balance} (1 h low {balance_min_1h})"
  - id: latency_outlier
    on: [api.request]
    when: latency_z != null and (latency_z > 2.5 or latency_z < -2.5) and latency_avg_5m > 0
    severity: medium
    audience: ops
    title: "{data.service} {data.endpoint}: z {latency_z}, avg {latency_avg_5m}"
    dedup: "{data.service}:{data.endpoint}"
    labels: {service: "{data.service}", ms: "{data.latency_ms}"}
  - id: spend_sum_outlier
    on: [card.authorization]
    when: spend_sum_z != null and abs(spend_sum_z) >= 3
    severity: medium
    audience: fraud
    title: "10 min spend {spend_sum_10m} (z {spend_sum_z})"
  - id: quick_second_transfer
    on: [transfer.initiated]
    when: since_transfer != null and since_transfer < 900 and max(data.amount, 10) > min(spend_sum_10m, 5000, 400)
    severity: low
    audience: aml
    title: "Transfer {data.amount} {since_transfer} s after the previous one"
  - id: login_milestone
    on: [login.succeeded]
    when: >
      logins_life in [2, 5, 10, 20] and hours_between(occurred_at, 0) > 1 and
      distance_km(data.geo.lat, data.geo.lon, 48.85, 2.35) < 3000
    severity: info
    audience: security  # it quotes a device's feature: a customer is told only what is keyed by them
    title: "Login {logins_life} from {data.geo.country} ({ips_by_device_1h} IPs on the device)"
  - id: device_many_ips
    on: [login.failed, login.succeeded]
    when: ips_by_device_1h >= 2 and startswith(data.ip, '203.') == false
    severity: low
    audience: security
    title: "{ips_by_device_1h} IPs on {data.device_id}"
    dedup: "{data.device_id}"
patterns:
  - id: login_payee_transfer
    kind: sequence
    by: customer_id
    within: 20m
    steps:
      - {name: login, on: [login.succeeded, password.reset]}
      - {name: payee, on: [payee.added]}
      - name: transfer
        on: [transfer.initiated]
        when: data.payee_id == payee.data.payee_id or (data.amount > 300 and occurred_at - login.occurred_at < 900)
    severity: high
    audience: fraud
    title: "{login.type} then payee {payee.data.payee_id} then {data.amount} to {data.payee_id}"
    summary: "started {login.occurred_at}, {logins_life} logins"
  - id: decline_then_approval
    kind: sequence
    by: data.card_id
    within: 2m
    steps:
      - {name: declined, on: [card.authorization], when: not data.approved}
      - name: approved
        on: [card.authorization]
        when: data.approved and data.merchant.id != declined.data.merchant.id
    severity: medium
    audience: fraud
    title: "Declined at {declined.data.merchant.id} ({declined.data.amount}), approved at {data.merchant.id}"
    dedup: "{data.card_id}"
  - id: failed_without_success
    kind: absence
    by: customer_id
    within: 2m
    after: {name: failed, on: [login.failed]}
    expect: {on: [login.succeeded], when: data.device_id == failed.data.device_id}
    severity: low
    audience: security
    title: "No login after the failure from {failed.data.ip} ({data.device_id})"
  - id: payee_unused
    kind: absence
    by: [customer_id]
    within: 5m
    after: {name: added, on: [payee.added]}
    expect: {on: [transfer.initiated], when: data.payee_id == added.data.payee_id}
    severity: info
    audience: customer
    title: "Payee {added.data.payee_id} in {data.payee_country} not paid"
  - id: service_silent
    kind: absence
    by: data.service
    within: 20s
    expect: {on: [api.request]}
    severity: medium
    audience: ops
    title: "{data.service} silent since {event_id} ({data.endpoint})"
    dedup: "{data.service}"
  - id: feed_silent
    kind: absence
    by: source
    within: 10s
    expect:
      on: [api.request]
      when: startswith(source, 'partner-')
    severity: high
    audience: ops
    title: "{source} silent"
    dedup: "{source}"
"""
