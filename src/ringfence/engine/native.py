"""The compiled engine core (``ringfence_native``, Rust with PyO3), behind the engine's interface.

:class:`NativeEngine` is a drop-in :class:`~ringfence.engine.engine.Engine`: the pack is
compiled to a plan (:mod:`ringfence.engine.plan`) that the core runs per event, holding the
per-key state natively. The Python engine stays the executable specification: same signals,
same feature values, and state rows either engine restores (a deployment may switch engines
and keep its state). ``tests/engine/test_native_*`` hold the core to that.

:func:`make_engine` is how runtimes get an engine: ``auto`` runs the core where it is
installed and supports the pack, else the Python engine, and logs why once.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from ringfence.config import ENGINES
from ringfence.engine.anomaly import AnomalyKind
from ringfence.engine.engine import Engine, check_run
from ringfence.engine.pack import RulePack
from ringfence.engine.patterns import PatternKind
from ringfence.engine.plan import plan_of, unsupported, value_names
from ringfence.engine.rules import AlertSignal, Output, with_fx
from ringfence.errors import RulePackError
from ringfence.events.model import Event, encode_event

log = logging.getLogger("ringfence.engine")
RESTORE_SLICE = 10_000  # checkpoint rows handed to the core in one call
RUN_CHUNK = 500  # a batch's events a call to the core: the engine's readers (the API) wait one call at most

_FEATURE, _SCORE, _PATTERN = 0, 1, 2
_said: set[str] = set()


def available() -> bool:
    """True when the compiled core is installed."""
    try:
        import ringfence_native  # noqa: F401
    except ImportError:
        return False
    return True


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.warning(message)


def _why_not_native(pack: RulePack) -> str | None:
    return "the compiled core is not installed (ringfence_native)" if not available() else unsupported(pack)


def check_runnable(pack: RulePack, engine: str) -> None:
    """Raise RulePackError if the ``engine`` setting cannot run ``pack`` (only ``native`` can
    refuse one): a pack is checked before it is stored, so that no runtime takes up a live pack
    it cannot run, nor fails to start on it."""
    if engine == "native" and (reason := _why_not_native(pack)) is not None:
        raise RulePackError(f"the native engine (the engine setting) cannot run this pack: {reason}")


def make_engine(pack: RulePack, allowed_lateness_s: float = 5.0, *, engine: str = "auto") -> Engine:
    """An engine for ``pack``: ``native`` (the compiled core; RulePackError if it cannot run
    the pack), ``python`` (the reference engine), or ``auto`` (native where it can, else
    python, and the log says why once)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "python":
        return Engine(pack, allowed_lateness_s)
    check_runnable(pack, engine)
    reason = _why_not_native(pack)
    if reason is None:
        return NativeEngine(pack, allowed_lateness_s, fallback=engine == "auto")
    _say_once(f"running the Python engine: {reason}")
    return Engine(pack, allowed_lateness_s)


_plans: dict[tuple[Any, ...], bytes] = {}


def _plan(pack: RulePack) -> bytes:
    """The plan of ``pack``, compiled once (the aws runtime builds an engine per chunk of
    records). A keyed stage's sub-pack shares its pack's text and digest, not its definitions."""
    key = (
        pack.digest,
        tuple(f.name for f in pack.features),
        tuple(a.name for a in pack.anomalies),
        tuple(p.id for p in pack.patterns),
        tuple(r.id for r in pack.rules),
    )
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) >= 32:
            _plans.clear()
        plan = _plans[key] = plan_of(pack)
    return plan


class _TimerCount:
    """``len(engine.timers)``, as the runtimes ask it, of the core's timers."""

    def __init__(self, core: Any, lock: threading.Lock) -> None:
        self._core = core
        self._lock = lock

    def __len__(self) -> int:
        with self._lock:
            return int(self._core.timers())


class NativeEngine(Engine):
    """The engine of ``pack``, run by the compiled core (see the module docstring)."""

    undoes = True

    def __init__(
        self, pack: RulePack, allowed_lateness_s: float = 5.0, *, core: Any = None, fallback: bool = False
    ) -> None:
        from ringfence_native import NativeCore

        if (reason := unsupported(pack)) is not None:
            raise RulePackError(f"the native engine cannot run this pack: {reason}")
        # one call at a time: the API's threads read what the processor's thread updates, and a
        # core call that builds Python objects, or runs a batch without the interpreter lock,
        # lets another thread in (PyO3 then refuses the second borrow of the core with an error)
        self._lock = threading.Lock()
        self._fallback = fallback  # reloaded into a pack the core cannot run: hand over to python
        self._core = core if core is not None else NativeCore(_plan(pack), allowed_lateness_s)
        marks = self._core.max_event_time()  # a reloaded core's: the base class resets them
        super().__init__(pack, allowed_lateness_s)
        self._core.set_max_event_time(marks)
        self._slots = value_names(pack)
        self._slot_of = {name: i for i, name in enumerate(self._slots)}
        names = self.persisted_names
        self._persisted: tuple[list[str], ...] = (
            [names[f.state_name] for f in pack.features],
            [names[a.state_name] for a in pack.anomalies],
            [names[p.state_name] for p in pack.patterns],
        )
        self._core.set_names(*self._persisted)
        self._row_of = {
            persisted: (kind, i) for kind, table in enumerate(self._persisted) for i, persisted in enumerate(table)
        }
        # an absence fires on a timer, for an earlier event: its signal never takes this event's rate
        self._timed = frozenset(p.id for p in pack.patterns if p.kind == PatternKind.ABSENCE)
        self._outputs: dict[str, list[tuple[str, Output]]] = {
            "rule": [(r.id, r.output) for r in pack.rules],
            "pattern": [(p.id, p.output) for p in pack.patterns],
        }
        self.timers = _TimerCount(self._core, self._lock)  # type: ignore[assignment]
        for name, values in self.lists.items():
            self._core.set_list(name, values)

    # the core holds these; the base class's attributes of the same names are views of it

    @property
    def max_event_time(self) -> dict[int, float]:
        with self._lock:
            return dict(self._core.max_event_time())

    @max_event_time.setter
    def max_event_time(self, marks: dict[int, float]) -> None:
        with self._lock:
            self._core.set_max_event_time(dict(marks))

    @property
    def late_events(self) -> int:
        with self._lock:
            return int(self._core.late_events)

    @late_events.setter
    def late_events(self, n: int) -> None:
        with self._lock:
            self._core.late_events = n

    def set_list(self, name: str, values: frozenset[str]) -> None:
        super().set_list(name, values)
        with self._lock:
            self._core.set_list(name, values)

    def watermark(self, partition: int | None = None) -> float:
        with self._lock:
            return float(self._core.watermark(partition))

    # -- processing ------------------------------------------------------------------------

    def _signal_of(self, raw: tuple[Any, ...]) -> AlertSignal:
        kind, index, dedup, title, summary, labels, event_id, event_type, offset, occurred_at = raw[:10]
        ingested_at, features, customer_id, late, related = raw[10:]
        rule_id, out = self._outputs[kind][index]
        self.hits[(rule_id, out.mode)] += 1
        return AlertSignal(
            rule_id=rule_id,
            rule_version=self.pack.version,
            severity=out.severity,
            audience=out.audience,
            mode=out.mode,
            dedup_key=dedup,
            title=title,
            summary=summary,
            labels=labels,
            event_id=event_id,
            event_type=event_type,
            offset=offset,
            occurred_at=occurred_at,
            ingested_at=ingested_at,
            features={self._slots[slot]: value for slot, value in features},
            customer_id=customer_id,
            late=late,
            related_events=related,
        )

    def process_raw(
        self, body: bytes, offset: int, partition: int, ingested_at: float
    ) -> tuple[list[AlertSignal], float | None]:
        """:meth:`process` of a stored event (``encode_event``'s JSON), without decoding it in
        Python: the signals, and the partition's watermark if the event was behind it."""
        with self._lock:
            raw, late, _ = self._core.process(body, offset, partition, ingested_at)
        return _with_fx([self._signal_of(s) for s in raw], [body], [offset], self._timed), late

    def process_raw_many(
        self,
        bodies: Sequence[bytes],
        offsets: Sequence[int],
        partitions: Sequence[int],
        ingested_ats: Sequence[float],
    ) -> tuple[list[AlertSignal], list[tuple[int, float]]]:
        self.ran = 0
        check_run(bodies, offsets, partitions, ingested_ats)
        signals: list[AlertSignal] = []
        late: list[tuple[int, float]] = []
        for lo in range(0, len(bodies), RUN_CHUNK):  # the lock is held a chunk at a time
            hi = lo + RUN_CHUNK
            with self._lock:
                try:
                    raw, behind = self._core.process_many(
                        list(bodies[lo:hi]), list(offsets[lo:hi]), list(partitions[lo:hi]), list(ingested_ats[lo:hi])
                    )
                finally:
                    self.ran = lo + self._core.ran
            signals += _with_fx([self._signal_of(s) for s in raw], bodies[lo:hi], offsets[lo:hi], self._timed)
            late += [(lo + i, mark) for i, mark in behind]
        return signals, late

    def process(self, event: Event, offset: int, partition: int, ingested_at: float) -> list[AlertSignal]:
        return self.process_raw(encode_event(event), offset, partition, ingested_at)[0]

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
        names = list(report)
        given = [(self._slot_of[k], v) for k, v in carried.items() if k in self._slot_of]
        wanted = [self._slot_of[name] for name in names]
        body = encode_event(event)
        with self._lock:
            raw, _, values = self._core.process(body, offset, partition, ingested_at, given, final, wanted)
        signals = [self._signal_of(s) for s in raw]
        return _with_fx(signals, [body], [offset], self._timed), dict(zip(names, values, strict=True))

    def advance(self, watermark: float | None = None) -> list[AlertSignal]:
        with self._lock:
            raw = self._core.advance(watermark)
        return [self._signal_of(s) for s in raw]

    # -- reading state -----------------------------------------------------------------------

    def feature_value(self, name: str, ctx: Any) -> Any:
        raise NotImplementedError("the native engine computes feature values in the core")

    def features_of(self, key_fields: dict[str, Any], at: float) -> dict[str, Any]:
        with self._lock:
            values = self._core.features_of(key_fields, at)
        return {self._slots[slot]: value for slot, value in values}

    def timer_of(self, persisted: str, key: str) -> float | None:
        row = self._row_of.get(persisted)
        if row is None or row[0] != _PATTERN:
            return None
        with self._lock:
            deadline = self._core.timer_of(row[1], key)
        return float(deadline) if deadline is not None else None

    def state_size(self) -> int:
        with self._lock:
            return int(self._core.state_size())

    # -- hot reload, persistence ---------------------------------------------------------------

    def _blank(self) -> Engine:
        return NativeEngine(self.pack, self.allowed_lateness_s, fallback=self._fallback)

    def reloaded(self, pack: RulePack) -> Engine:
        kept = []
        for i, f in enumerate(pack.features):
            old = self._features.get(f.name)
            if old is not None and old.signature == f.signature:
                kept.append((_FEATURE, self.pack.features.index(old), i))
        for i, a in enumerate(pack.anomalies):
            old_a = self._anomalies.get(a.name)
            if old_a is not None and old_a.signature == a.signature and a.kind == AnomalyKind.ROBUST_ZSCORE:
                kept.append((_SCORE, self.pack.anomalies.index(old_a), i))
        for i, p in enumerate(pack.patterns):
            old_p = self._patterns.get(p.id)
            if old_p is not None and old_p.signature == p.signature:
                kept.append((_PATTERN, self.pack.patterns.index(old_p), i))
        if (reason := unsupported(pack)) is not None:
            if not self._fallback:
                raise RulePackError(f"the native engine cannot run this pack: {reason}")
            return self._handed_to_python(pack, reason)
        with self._lock:
            core = self._core.reloaded(_plan(pack), kept)
        fresh = NativeEngine(pack, self.allowed_lateness_s, core=core, fallback=self._fallback)
        for name in self.edited_lists & pack.lists.keys():
            fresh.set_list(name, self.lists[name])
        fresh.hits = self.hits
        return fresh

    def _handed_to_python(self, pack: RulePack, reason: str) -> Engine:
        """The Python engine for ``pack``, holding this core's state of every definition ``pack``
        keeps unchanged (its persisted names carry the definition's digest, so restore keeps
        exactly those), with the lists and hit counts."""
        _say_once(f"running the Python engine: {reason}")
        fresh = Engine(pack, self.allowed_lateness_s)
        with self._lock:
            rows = [(name, key, raw) for name, key, raw in self._core.dump() if raw is not None]
        fresh.restore(rows, self.max_event_time)
        for name in self.edited_lists & pack.lists.keys():
            fresh.set_list(name, self.lists[name])
        fresh.hits = self.hits
        return fresh

    def expire(self, watermark: float) -> int:
        with self._lock:
            return int(self._core.expire(watermark))

    def take_changes(self) -> list[tuple[str, str, bytes | None]]:
        with self._lock:
            return self._core.take_changes()

    def take_changes_packed(self) -> tuple[bytes, int] | None:
        with self._lock:
            return self._core.take_changes_packed()

    def undo_point(self) -> None:
        with self._lock:
            self._core.undo_point()

    def changes_committed(self) -> None:
        with self._lock:
            self._core.take_committed()

    def forget_undo(self) -> None:
        with self._lock:
            self._core.forget_undo()

    def undo(self) -> bool:
        with self._lock:
            return bool(self._core.undo())

    def restore_packed(self, packed: bytes) -> int:
        with self._lock:
            return int(self._core.restore_packed(packed))

    def snapshot_begin(self) -> None:
        with self._lock:
            self._core.snapshot_begin()

    def snapshot_next(self, max_rows: int) -> tuple[bytes, int, bool]:
        with self._lock:
            return self._core.snapshot_next(max_rows)

    def restore(self, rows: Iterable[tuple[str, str, bytes]], max_event_time: dict[int, float]) -> None:
        # in slices: the lock (and the GIL) is let go between them, and the core maps each
        # row's persisted name itself (rows of definitions no longer in the pack are skipped)
        remaining = iter(rows)
        while batch := list(itertools.islice(remaining, RESTORE_SLICE)):
            with self._lock:
                self._core.restore(batch)
        with self._lock:
            self._core.set_max_event_time(dict(max_event_time))


class _Stamped(msgspec.Struct):
    """What evidence needs of a stored event: its id and the rate its money was converted at."""

    event_id: str
    data: dict[str, Any] = {}


_stamped = msgspec.json.Decoder(_Stamped)


def _with_fx(
    signals: list[AlertSignal], bodies: Sequence[bytes], offsets: Sequence[int], timed: frozenset[str]
) -> list[AlertSignal]:
    """The rate each signal's event was converted at, as :meth:`Engine._process` gives it: on the
    signals of the events run (matched by offset and id), not on a timer's (``timed``: the
    absences, which fire for an earlier event, even one of this run)."""
    if not signals:
        return signals
    at: dict[int, list[int]] = {}  # offsets count per partition: two events of a run may share one
    for i, offset in enumerate(offsets):
        at.setdefault(offset, []).append(i)
    out = []
    for signal in signals:
        for i in () if signal.rule_id in timed else at.get(signal.offset, ()):
            event = _stamped.decode(bodies[i])
            if event.event_id == signal.event_id:
                signal = with_fx(signal, event.data)
                break
        out.append(signal)
    return out
