"""The packed state rows both engines write and read (``ringfence.engine.packed``,
``native/src/packed.rs``): version 2 written, version 1 (stores from before it) still read, by
either engine; malformed bytes refused with what is wrong; about half version 1's bytes."""

from __future__ import annotations

import msgspec
import pytest

from ringfence.bench.differential import default_packs, simulated
from ringfence.engine.packed import pack_rows, unpack_rows
from tests.helpers.differential import engine_factory, every_state_row

PACKS = dict(default_packs())
ROWS = [
    ("feature:a@1", "c1", b"\x01"),
    ("feature:b@1", "c1", None),
    ("feature:a@1", "c\u00e9", b"x" * 300),
    ("feature:a@1", "c1", b"\x02"),  # the same key again later: a record of its own, in order
]


def test_rows_round_trip_in_order() -> None:
    packed = pack_rows(ROWS)
    assert packed[1] == 2  # a fixarray header, then the version
    assert unpack_rows(packed) == ROWS
    assert unpack_rows(pack_rows([])) == []


def test_version_1_is_still_read() -> None:
    assert unpack_rows(msgspec.msgpack.encode(ROWS)) == ROWS
    assert unpack_rows(msgspec.msgpack.encode([])) == []


@pytest.mark.parametrize(
    "top",
    [
        [2, "names"],  # no list of names
        [2, ["a"], "k"],  # a record that is no array
        [2, ["a"], ["k", 0]],  # a name index without its state
        [2, ["a"], ["k", 1, b"x"]],  # past the names
        [2, ["a"], ["k", -1, b"x"]],
        [2, ["a"], ["k", 0, "text"]],  # a state that is not bytes
        [2, ["a"], [7, 0, b"x"]],  # a key that is not text
    ],
)
@pytest.mark.parametrize("kind", ["python", "native"])
def test_malformed_rows_are_refused_saying_so(kind: str, top: list[object]) -> None:
    packed = msgspec.msgpack.encode(top)
    if kind == "python":
        with pytest.raises(msgspec.DecodeError, match="malformed packed state rows"):
            unpack_rows(packed)
    else:
        with pytest.raises(ValueError, match="malformed packed state rows"):
            engine_factory("native")(PACKS["default"]).restore_packed(packed)


@pytest.mark.parametrize("reader", ["python", "native"])
@pytest.mark.parametrize("writer", ["python", "native"])
@pytest.mark.parametrize("version", [1, 2])
def test_either_engine_restores_the_others_rows_in_either_version(writer: str, reader: str, version: int) -> None:
    live = engine_factory(writer)(PACKS["default"])
    events, _ = simulated(7, 1_500, 60, 5.0)
    changes: list[bytes] = []
    for offset, event in enumerate(events, 1):
        live.process(event, offset, 0, event.occurred_at)
        if offset % 100 == 0 and (taken := live.take_changes_packed()) is not None:
            changes.append(taken[0] if version == 2 else msgspec.msgpack.encode(unpack_rows(taken[0])))
    restored = engine_factory(reader)(PACKS["default"])
    for packed in changes:
        restored.restore_packed(packed)
    assert every_state_row(restored) == every_state_row(live)


def test_the_cores_rows_are_about_half_the_bytes_of_version_1() -> None:
    engine = engine_factory("native")(PACKS["default"])
    events, _ = simulated(8, 2_000, 500, 5.0)
    for offset, event in enumerate(events, 1):
        engine.process(event, offset, 0, event.occurred_at)
    taken = engine.take_changes_packed()
    assert taken is not None
    packed, count = taken
    rows = unpack_rows(packed)
    assert count == len(rows) > 1_000
    assert len(packed) < 0.65 * len(msgspec.msgpack.encode(rows))


@pytest.mark.parametrize("kind", ["python", "native"])
def test_version_1_as_the_core_wrote_it_is_read(kind: str) -> None:
    # the core wrote version 1 under an array32 header, whatever the number of rows
    rows = msgspec.msgpack.encode(ROWS)
    assert rows[0] == 0x94
    as_written = b"\xdd\x00\x00\x00\x04" + rows[1:]
    if kind == "python":
        assert unpack_rows(as_written) == ROWS
    else:
        engine = engine_factory("native")(PACKS["default"])
        assert engine.restore_packed(as_written) == len(ROWS)


def test_a_small_batch_carries_only_the_names_it_uses() -> None:
    # the others are written as "" (a byte each), so a batch of one event is about version 1's size
    engine = engine_factory("native")(PACKS["default"])
    names = len(engine.persisted_names)
    events, _ = simulated(9, 50, 10, 5.0)
    for offset, event in enumerate(events, 1):
        engine.process(event, offset, 0, event.occurred_at)
        taken = engine.take_changes_packed()
        if taken is not None:
            # a byte a name left out, and a few of headers (a full name list is about 1.2 KB)
            assert len(taken[0]) <= len(msgspec.msgpack.encode(unpack_rows(taken[0]))) + names + 16
