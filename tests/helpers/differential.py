"""What the differential tests of the compiled core share: the candidate engine (the compiled
core: a laptop without it skips, CI fails) and a driver for one short scripted run."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ringfence.bench.differential import Diverged, Factory, Mismatch, Pair, fields_of, native_factory
from ringfence.engine import native
from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack
from ringfence.engine.packed import unpack_rows
from ringfence.events.model import Event
from tests.helpers.servers import unavailable


def native_candidate() -> Factory:
    """The factory of the compiled core's engine; skips without the core, fails under CI=true."""
    if not native.available():
        unavailable("the compiled core ringfence_native is not installed (scripts/_venv.sh builds it where cargo is)")
    return native_factory


def engine_factory(kind: str) -> Callable[[RulePack], Engine]:
    """Engines of ``kind`` (``python``, or ``native``: the compiled core, which CI requires)."""
    make = Engine if kind == "python" else native_candidate()
    return lambda pack: make(pack, 5.0)


def every_state_row(engine: Engine) -> dict[tuple[str, str], bytes | None]:
    """Every state row ``engine`` holds, by (persisted name, key)."""
    engine.snapshot_begin()
    packed, _, last = engine.snapshot_next(10**9)
    assert last
    return {(name, key): state for name, key, state in unpack_rows(packed)}


def first_mismatch(
    pack: RulePack,
    events: Sequence[tuple[Event, int, float, bool]],
    candidate: Factory,
    *,
    marks: Sequence[float | None] = (),
    reload: RulePack | None = None,
    restore_at: int | None = None,
) -> Mismatch | None:
    """``events`` (each with its partition, ingested-at time and whether the candidate reads its
    raw JSON, every other such one through ``process_raw_many``) through ``pack`` on the
    reference engine and ``candidate``: state compared after each event, then timers fired and
    state expired at each of ``marks``; ``reload`` swaps the pack half-way and ``restore_at``
    restores each engine from the other's checkpoint before that event."""
    pair = Pair(pack, candidate)
    seen = []
    try:
        for i, (event, partition, ingested_at, raw) in enumerate(events):
            if reload is not None and i == len(events) // 2:
                pair.reload(reload)
            if i == restore_at:
                pair.cross_restore()
            # every other raw event through process_raw_many (a run of one: a check follows)
            pair.process(event, i + 1, partition, ingested_at, raw=raw, batched=i % 2 == 1)
            seen.append(fields_of(event))
            pair.check(seen[-4:])
        for mark in marks:
            pair.advance(mark)
            pair.expire(mark if mark is not None else pair.ref.watermark())
            pair.check(seen[-8:], mark)
        if restore_at is not None and restore_at >= len(events):
            pair.cross_restore()
            pair.check(seen[-8:])
    except Diverged as exc:
        return exc.mismatch
    return None
