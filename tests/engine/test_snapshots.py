"""A snapshot written a part at a time while events keep coming, with the changelog from its
start applied over it, restores exactly the state of the engine it was taken from: for both
engines, and across them (either restores the other's)."""

from __future__ import annotations

import msgspec
import pytest

from ringfence.bench.differential import default_packs, simulated
from ringfence.engine.packed import unpack_rows
from tests.helpers.differential import engine_factory, every_state_row

PACKS = dict(default_packs())


@pytest.mark.parametrize("reader", ["python", "native"])
@pytest.mark.parametrize("writer", ["python", "native"])
@pytest.mark.parametrize("pack", ["default", "coverage"])
def test_a_snapshot_taken_while_events_run_restores_the_engine(pack: str, writer: str, reader: str) -> None:
    live = engine_factory(writer)(PACKS[pack])
    changelog: list[bytes] = []
    parts: list[bytes] = []
    since, walking, events_during_walk = -1, False, 0
    events, _ = simulated(5, 4_000, 150, 5.0)
    for offset, event in enumerate(events, 1):
        live.process(event, offset, offset % 2, event.occurred_at)
        events_during_walk += walking
        if offset % 40:
            continue
        if (changes := live.take_changes_packed()) is not None:  # a batch's commit
            changelog.append(changes[0])
        if offset == 1_000:
            live.snapshot_begin()
            since, walking = len(changelog), True
        if walking:
            packed, _, last = live.snapshot_next(41)
            parts.append(packed)
            walking = not last
        if offset % 1_000 == 0:
            live.expire(event.occurred_at - 600)  # states drop while the walk goes on
    if (changes := live.take_changes_packed()) is not None:
        changelog.append(changes[0])
    assert not walking
    assert len(parts) > 5
    assert events_during_walk > 1_000  # many batches ran, and expiries, while it was written

    restored = engine_factory(reader)(PACKS[pack])
    for packed in [*parts, *changelog[since:]]:
        restored.restore_packed(packed)
    restored.max_event_time = live.max_event_time
    assert every_state_row(restored) == every_state_row(live)
    # the absence timers came back armed: the same alerts fire once the time comes
    later = max(live.max_event_time.values()) + 86_400
    assert sorted(s.dedup_key for s in restored.advance(later)) == sorted(s.dedup_key for s in live.advance(later))


@pytest.mark.parametrize("kind", ["python", "native"])
def test_packed_rows_without_state_drop_what_they_name(kind: str) -> None:
    engine = engine_factory(kind)(PACKS["default"])
    events, _ = simulated(6, 300, 20, 5.0)
    for offset, event in enumerate(events, 1):
        engine.process(event, offset, 0, event.occurred_at)
    held = every_state_row(engine)
    changes = engine.take_changes_packed()
    assert changes is not None
    far = max(engine.max_event_time.values()) + 10**7
    engine.advance(far)  # absences fire (an armed one is kept)...
    engine.expire(far)  # ...and then every state with a horizon goes
    kept = every_state_row(engine)
    dropped = engine.take_changes_packed()
    assert dropped is not None
    gone = {(name, key) for name, key, state in unpack_rows(dropped[0]) if state is None}
    assert len(gone) > 50
    assert gone.isdisjoint(kept)

    fresh = engine_factory(kind)(PACKS["default"])
    fresh.restore_packed(changes[0])
    assert every_state_row(fresh) == held
    fresh.restore_packed(dropped[0])
    assert every_state_row(fresh) == kept
    assert fresh.state_size() == engine.state_size()


@pytest.mark.parametrize("kind", ["python", "native"])
def test_states_dropped_during_a_walk_lose_no_state_the_walk_had_still_to_write(kind: str) -> None:
    """A walk begun over old customers' and new customers' states; the old ones expire part-way
    through. Dropping a record must not move a record the walk has yet to reach (the new
    customers', which never change again, so only the snapshot holds them) out of its way."""
    live = engine_factory(kind)(PACKS["default"])
    old, _ = simulated(7, 800, 60, 5.0)
    later, _ = simulated(8, 800, 60, 5.0)
    shift = 400 * 86_400.0  # past every horizon of the default pack's windows
    events = [*old, *(msgspec.structs.replace(e, occurred_at=e.occurred_at + shift) for e in later)]
    for offset, event in enumerate(events, 1):
        live.process(event, offset, 0, event.occurred_at)
    before = live.take_changes_packed()
    assert before is not None
    live.snapshot_begin()
    parts = [live.snapshot_next(20)[0]]  # the first records walked (old customers')
    dropped = live.expire(max(live.max_event_time.values()))
    assert dropped > 100
    changelog = live.take_changes_packed()
    assert changelog is not None
    last = False
    while not last:
        packed, _, last = live.snapshot_next(20)
        parts.append(packed)

    restored = engine_factory(kind)(PACKS["default"])
    for packed in [*parts, changelog[0]]:
        restored.restore_packed(packed)
    assert every_state_row(restored) == every_state_row(live)
