"""Edges of the compiled core a review found: input that must not stall it, literals JSON
cannot carry, and a corrupt checkpoint row, each against the reference engine."""

from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal

import msgspec
import pytest

from ringfence.engine.engine import Engine
from ringfence.engine.native import NativeEngine, make_engine
from ringfence.engine.pack import load_pack
from ringfence.errors import RulePackError
from ringfence.events.decode import validate_event
from ringfence.events.fx import FxRate, FxTable
from ringfence.events.model import Event, encode_event
from ringfence.testing import event
from tests.helpers.differential import every_state_row, native_candidate

PACK = """
version: "edges"
types: [acme.bag]
rules:
  - id: inside
    on: [acme.bag]
    when: data.a in data.b
    severity: low
    audience: ops
    title: inside
  - id: below_infinity
    on: [acme.bag]
    when: data.n < 1e999 and data.n > -1e999
    severity: low
    audience: ops
    title: "{data.n}"
patterns:
  - id: twice
    kind: sequence
    by: customer_id
    within: 1h
    steps:
      - {name: first, on: [acme.bag]}
      - {name: second, on: [acme.bag]}
    severity: low
    audience: ops
    title: twice
"""


def bag(event_id: str, **data: object) -> Event:
    return Event(event_id, "acme.bag", 1_800_000_000.0, "acme", dict(data), "cus_1")


def fired(engine: Engine, event: Event) -> list[str]:
    return sorted(s.rule_id for s in engine.process(event, 1, 0, 0.0))


@pytest.mark.serial  # CPU work < 1 s
def test_membership_of_a_big_array_in_another_is_linear_and_agrees() -> None:
    pack = load_pack(PACK)
    core, reference = native_candidate()(pack, 5.0), Engine(pack)
    event = bag("e1", a=[0] * 15_000, b=[1] * 15_000 + [[0] * 15_000], n=1)
    started = time.perf_counter()
    got = fired(core, event)
    assert time.perf_counter() - started < 1.0  # was 15 s: the item rebuilt per element
    assert got == fired(reference, event) == ["below_infinity", "inside"]


@pytest.mark.parametrize(("a", "b"), [([1, 2], [None]), (None, [None]), (1.5, [None, 1.5])])
def test_membership_agrees_with_nulls_in_the_array(a: object, b: list[object]) -> None:
    pack = load_pack(PACK)
    core, reference = native_candidate()(pack, 5.0), Engine(pack)
    event = bag("e1", a=a, b=b, n=1)
    assert fired(core, event) == fired(reference, event)


COMPARED = """
version: "compared"
types: [acme.bag]
rules:
  - {id: equal, on: [acme.bag], when: data.a == data.b, severity: low, audience: ops, title: equal}
  - {id: unequal, on: [acme.bag], when: data.a != data.b, severity: low, audience: ops, title: unequal}
  - {id: inside, on: [acme.bag], when: data.a in data.b, severity: low, audience: ops, title: inside}
  - {id: below, on: [acme.bag], when: data.a < data.b, severity: low, audience: ops, title: below}
"""


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([[1]], [{"k": 1}]),  # an array and an object inside arrays
        ({"k": 1}, [[1, 2]]),  # an object looked for among arrays
        ({"k": [1]}, {"k": {"j": 1}}),  # inside objects
        ([1], {"k": 1}),
        ({"k": 1}, [1]),
        ([[1], {"k": 1}], [[1], [1]]),
        ({"k": {"j": [1]}}, {"k": {"j": [1]}}),
        ([[1, [2, 3]], 0], [[1, [2, 4]], 0]),  # ordered at depth, element by element
        ([[1, [2, 3]], 0], [[1, [2, 3]]]),
        ([[1, [2, "x"]], 0], [[1, [2, 4]], 0]),  # a text against a number deep down: no order
    ],
)
def test_objects_and_arrays_compared_with_each_other_agree_and_end(a: object, b: object) -> None:
    # an object against an array once sent the core's equality round between two functions
    # until the stack ran out: the process died on one event
    pack = load_pack(COMPARED)
    core, reference = native_candidate()(pack, 5.0), Engine(pack)
    event = bag("e1", a=a, b=b)
    assert fired(core, event) == fired(reference, event)


NOT_A_NUMBER = """
version: "nan"
types: [acme.bag]
features:
  - {name: p90, agg: quantile, q: 0.9, of: data.v, window: 1h, by: customer_id, on: [acme.bag]}
anomaly:
  - name: opened_z
    kind: robust_zscore
    of: "hours_between(data.opened, occurred_at)"
    by: customer_id
    on: [acme.bag]
    min_samples: 3
    samples: 32
    window: 90d
rules:
  - {id: high, on: [acme.bag], when: p90 > 50 or opened_z > 3, severity: low, audience: ops, title: high}
"""


def test_a_text_nan_read_as_a_number_fails_no_event_and_no_read() -> None:
    # float("nan") of an event's text reached sorts whose comparison was no total order: Rust's
    # sort panicked, failing every later event of the key, and where a read was not guarded
    # (a customer's features) the panic left the core as a BaseException no handler took
    pack = load_pack(NOT_A_NUMBER)
    core, reference = native_candidate()(pack, 5.0), Engine(pack)
    events = [
        Event(
            f"e{i}",
            "acme.bag",
            1_800_000_000.0 + 120.0 * i,  # samples leave the hour's window as the run goes on
            "acme",
            {"v": "nan" if i % 7 == 0 else float(i % 60), "opened": "nan" if i % 9 == 0 else 1_800_000_000.0},
            "cus_1",
        )
        for i in range(80)
    ]
    for offset, e in enumerate(events, 1):
        for engine in (core, reference):
            engine.process(e, offset, 0, 0.0)  # raises on a failure
        features = core.features_of({"customer_id": "cus_1"}, e.occurred_at)
        assert set(features) == set(reference.features_of({"customer_id": "cus_1"}, e.occurred_at))


@pytest.mark.parametrize(
    "coordinates",
    [
        (-1_800_000_201.25, 1_800_000_201.25, 0.1),  # found by the Hypothesis differential
        (48.8566, 2.3522, 51.5074),
        (-33.8688, 151.2093, 40.7128),
        (89.9, 0.0, -89.9),
    ],
)
def test_a_distance_is_the_references_to_the_last_bit(coordinates: tuple[float, ...]) -> None:
    pack = load_pack(
        PACK.replace(
            "patterns:",
            "features:\n  - name: far\n    agg: last\n    on: [acme.bag]\n    by: customer_id\n"
            "    of: distance_km(data.a, data.b, data.n, 0.125)\npatterns:",
        )
    )
    core, reference = native_candidate()(pack, 5.0), Engine(pack)
    lat1, lon1, lat2 = coordinates
    e = bag("e1", a=lat1, b=lon1, n=lat2)
    for engine in (core, reference):
        engine.process(e, 1, 0, 0.0)
    values = [engine.features_of({"customer_id": "cus_1"}, e.occurred_at)["far"] for engine in (core, reference)]
    assert isinstance(values[0], float)
    assert values[0] == values[1]


def test_a_literal_json_cannot_hold_is_still_infinite() -> None:
    pack = load_pack(PACK)
    core, reference = native_candidate()(pack, 5.0), Engine(pack)
    event = bag("e1", a=1, b=[], n=10**15)
    assert fired(core, event) == fired(reference, event) == ["below_infinity"]


def test_a_pattern_row_naming_a_step_past_the_pattern_fails_its_event_not_the_process() -> None:
    pack = load_pack(PACK)
    core = native_candidate()(pack, 5.0)
    core.process(bag("e1", a=1, b=[], n=1), 1, 0, 0.0)
    rows = core.take_changes()
    (name, key, raw) = next(r for r in rows if r[0].startswith("pattern:"))
    state = msgspec.msgpack.decode(raw)
    state[1][0][1] = 5  # the partial's step: the pattern has two
    broken = native_candidate()(pack, 5.0)
    broken.restore([(name, key, msgspec.msgpack.encode(state))], {})
    with pytest.raises(Exception, match="step the pattern does not have"):
        broken.process_raw(encode_event(bag("e2", a=1, b=[], n=1)), 2, 0, 0.0)


HST = """
anomaly:
  - name: odd
    kind: half_space_trees
    by: global
    on: [acme.bag]
    of: [data.n]
"""


def test_under_auto_a_reload_into_a_pack_the_core_cannot_run_hands_its_state_to_python() -> None:
    native_candidate()  # the core is needed (CI has it)
    pack, bigger = load_pack(FEATURED), load_pack(FEATURED.replace('"featured"', '"featured-2"') + HST)
    core, reference = make_engine(pack, 5.0, engine="auto"), Engine(pack)
    assert isinstance(core, NativeEngine)
    for i in range(5):
        event = bag(f"e{i}", a=1, b=[], n=i)
        core.process(event, i, 0, 0.0)
        reference.process(event, i, 0, 0.0)
    handed, expected = core.reloaded(bigger), reference.reloaded(bigger)
    assert type(handed) is Engine
    assert type(core.fresh().reloaded(bigger)) is Engine  # a restart's engine hands over too
    assert handed.features_of({"customer_id": "cus_1"}, 1_800_000_000.0) == {"bags": 5}
    assert handed.features_of({"customer_id": "cus_1"}, 1_800_000_000.0) == expected.features_of(
        {"customer_id": "cus_1"}, 1_800_000_000.0
    )
    with pytest.raises(RulePackError, match="half_space_trees"):
        make_engine(pack, 5.0, engine="native").reloaded(bigger)


FEATURED = """
version: "featured"
types: [acme.bag]
features:
  - name: bags
    on: [acme.bag]
    by: customer_id
    agg: count
rules:
  - id: many
    on: [acme.bag]
    when: bags > 100
    severity: low
    audience: ops
    title: many
"""


def test_readers_on_other_threads_meet_no_batch_the_core_runs_without_the_interpreter_lock() -> None:
    """A batch runs in the core with the interpreter lock released, so the API's threads run
    meanwhile: every read they make of the engine waits for the engine's lock instead of
    meeting the core mid-batch (PyO3 would refuse the second borrow with an error)."""
    engine = NativeEngine(load_pack(PACK))
    bodies = [encode_event(bag(f"e{i}", a=i, b=[i, i + 1], n=i)) for i in range(4_000)]
    errors: list[Exception] = []
    reads = 0
    running = threading.Event()
    done = threading.Event()

    def read() -> None:
        nonlocal reads
        running.set()
        while not done.is_set():
            try:
                len(engine.timers)
                engine.watermark(0)
                engine.state_size()
                engine.features_of({"customer_id": "cus_1"}, 1_800_000_000.0)
                reads += 1
            except Exception as error:  # any of them is the failure
                errors.append(error)
                return

    reader = threading.Thread(target=read)
    reader.start()
    running.wait(5)
    try:
        for _ in range(5):
            signals, _late = engine.process_raw_many(bodies, range(1, 4_001), [0] * 4_000, [0.0] * 4_000)
            assert signals
    finally:
        done.set()
        reader.join(5)
    assert errors == []
    assert reads > 0


FX_PACK = """
version: "fx"
rules:
  - id: big
    on: [transfer.initiated]
    when: data.amount_ref >= 100
    severity: low
    audience: ops
    title: "{data.amount} {data.currency} = {data.amount_ref}"
patterns:
  - id: quiet
    kind: absence
    by: customer_id
    within: 1m
    expect: {on: [transfer.initiated]}
    severity: low
    audience: ops
    title: quiet
"""


def test_the_rate_in_evidence_is_the_triggering_events_in_both_engines_never_a_timers() -> None:
    """The absence fires, in the same run, for an earlier converted event: its signal takes no
    rate, as the reference engine gives none to a timer's signal."""
    table = FxTable("EUR", {"HUF": FxRate("HUF", Decimal("0.0025"), dt.date(2026, 12, 1))})
    t = 1_795_000_000.0
    raws = [
        event("transfer.initiated", at=t, customer_id="cus_a", amount="100000.00", currency="HUF"),
        event("transfer.initiated", at=t + 120, customer_id="cus_b", amount="1.00", currency="HUF"),
    ]
    bodies = [encode_event(validate_event(msgspec.json.encode(r), t + 200, fx=table)) for r in raws]
    pack = load_pack(FX_PACK)
    core, reference = native_candidate()(pack, 5.0), Engine(pack)
    run = ([0, 1], [0, 0], [t, t + 120])
    got, expected = core.process_raw_many(bodies, *run)[0], reference.process_raw_many(bodies, *run)[0]
    assert got == expected
    assert [(s.rule_id, s.fx is not None) for s in got] == [("big", True), ("quiet", False)]


COUNT_PACK = """
version: "counts"
features:
  - name: logins_1h
    agg: count
    by: customer_id
    window: 1h
    on: [login.succeeded]
rules:
  - id: busy
    on: [login.succeeded]
    when: logins_1h >= 2
    severity: low
    audience: ops
    title: busy
"""


def test_a_run_fails_at_an_undecodable_event_in_its_turn_as_the_reference_engine_does() -> None:
    """The core parses a run's events before running them (it fetches their state ahead); one
    it cannot decode still fails in its turn: the events before it ran, none after it."""
    t = 1_795_000_000.0
    pack = load_pack(COUNT_PACK)
    customers = [f"cus_{i % 4}" for i in range(12)]
    bodies = [
        encode_event(validate_event(msgspec.json.encode(event("login.succeeded", at=t + i, customer_id=c)), t))
        for i, c in enumerate(customers)
    ]
    bodies[7] = b'{"not": "an event"'
    run = (list(range(1, 13)), [0] * 12, [t] * 12)
    core, reference = native_candidate()(pack, 5.0), Engine(pack)
    for engine in (core, reference):
        with pytest.raises(ValueError, match=r"undecodable|truncated"):  # each engine's decoder's words
            engine.process_raw_many(bodies, *run)
    counts = {c: core.features_of({"customer_id": c}, t + 20)["logins_1h"] for c in sorted(set(customers))}
    assert counts == {"cus_0": 2, "cus_1": 2, "cus_2": 2, "cus_3": 1}  # the first 7 events only
    assert counts == {c: reference.features_of({"customer_id": c}, t + 20)["logins_1h"] for c in counts}


CASES = """
version: "cases"
types: [acme.bag]
rules:
  - {id: upper, on: [acme.bag], when: upper(data.s) == data.up, severity: low, audience: ops, title: upper}
  - {id: lower, on: [acme.bag], when: lower(data.s) == data.low, severity: low, audience: ops, title: lower}
"""


@pytest.mark.parametrize(
    "text",
    ["ƛazy", "ɤ", "A\u03a3\U00010d50", "STRASSE ß", "İstanbul", "ǅ", "\u1c89", "ﬃ", "plain ascii", "Ωmega"],
)
def test_upper_and_lower_are_the_interpreters_in_both_engines(text: str) -> None:
    """The core's own case tables are its compiler's Unicode (16.0 against Python 3.11's 14.0:
    `upper('ƛ')` was U+A7DC in the core and 'ƛ' in Python); it asks Python for any text past
    ASCII, so a list of upper-cased names matches alike in both."""
    pack = load_pack(CASES)
    core, reference = native_candidate()(pack, 5.0), Engine(pack)
    event = bag("e1", s=text, up=text.upper(), low=text.lower())
    assert fired(core, event) == fired(reference, event) == ["lower", "upper"]


DIGITS = """
version: "digits"
types: [acme.bag]
features:
  - {name: total, by: customer_id, agg: sum, of: data.t, on: [acme.bag]}
rules:
  - {id: hours, on: [acme.bag], when: "hours_between(data.h, 0) == null", severity: low, audience: ops, title: hours}
"""


@pytest.mark.parametrize("digits", ["\u0661\u0662", "\uff11\uff12", "\u0967"])
def test_numbers_in_text_are_ascii_digits_in_both_engines(digits: str) -> None:
    """Python's float() reads other scripts' digits ('١٢' is 12.0); the core does not. The
    reference reads them as the core does: a function of such a text is null, and an aggregate
    skips it as no number, in both (it failed the event until 2026-12-06)."""
    pack = load_pack(DIGITS)
    core, reference = native_candidate()(pack, 5.0), Engine(pack)
    assert fired(core, bag("e1", h=digits, t=1)) == fired(reference, bag("e1", h=digits, t=1)) == ["hours"]
    for engine in (core, reference):
        engine.process(bag("e2", h=1, t=digits), 2, 0, 0.0)
        assert engine.features_of({"customer_id": "cus_1"}, 1_800_000_000.0)["total"] == 1, type(engine).__name__


def _chunks() -> list[str]:
    """Every code point of the blocks the core maps itself (and their neighbours), 64 a text,
    and final-sigma contexts: both engines must map each alike."""
    points = [*range(0x80, 0x500), *range(0x1E00, 0x1F00), *range(0x2000, 0x20D0)]
    texts = ["".join(chr(p) for p in points[i : i + 64]) for i in range(0, len(points), 64)]
    sigma = ["ΟΔΟΣ", "Σ", "ΑΣ.", "ΑΣ\u0301", "ΑΣ\u0301\u0392", "ΑΣ \u0392", "Ὀδυσσεύς", "ΣΑΣ\u2019", "Café Łódź"]
    return texts + sigma + [" ".join(sigma)]


def test_the_blocks_the_core_maps_itself_map_as_the_interpreter_does() -> None:
    """The core maps ASCII and a few blocks of European scripts without asking Python (asking
    waits on the interpreter lock): the interpreter must agree on each of their code points."""
    pack = load_pack(CASES)
    core, reference = native_candidate()(pack, 5.0), Engine(pack)
    for i, text in enumerate(_chunks()):
        event = bag(f"e{i}", s=text, up=text.upper(), low=text.lower())
        assert fired(core, event) == fired(reference, event) == ["lower", "upper"], text


CONCAT = """
version: "concat"
types: [acme.bag]
features:
  - name: joined
    on: [acme.bag]
    by: customer_id
    agg: last
    of: data.a + data.b
rules:
  - id: too_long
    on: [acme.bag]
    when: (data.a + data.b) == null
    severity: low
    audience: ops
    title: "{joined}"
"""


@pytest.mark.parametrize(
    ("a", "b", "joined"),
    [
        ("x" * 2_048, "y" * 2_048, True),
        ("x" * 2_048, "y" * 2_049, False),
        ("\u00e9" * 2_048, "\u00e8" * 2_048, True),  # characters, not bytes
        ("\u00e9" * 2_048, "\u00e8" * 2_049, False),
        ("\U0001f600" * 4_000, "", True),
        ("\U0001f600" * 4_097, "", False),
    ],
)
def test_a_text_plus_a_text_past_4096_characters_is_null_in_both_engines(a: str, b: str, joined: bool) -> None:
    """A chain of ``+`` on long texts cost its length squared: a pack's 36-term chains over a
    60 KB field took 4.75 s an event in the core."""
    pack = load_pack(CONCAT)
    for engine in (Engine(pack), native_candidate()(pack, 5.0)):
        signals = engine.process(bag("e1", a=a, b=b), 1, 0, 0.0)
        assert [s.rule_id for s in signals] == ([] if joined else ["too_long"]), type(engine).__name__
        assert engine.features_of({"customer_id": "cus_1"}, 1_800_000_000.0)["joined"] == (a + b if joined else None)


@pytest.mark.serial  # CPU work < 0.05 s
def test_a_chain_of_long_texts_costs_no_more_than_its_bound() -> None:
    chain = " + ".join(["data.a"] * 36)
    pack = load_pack(CONCAT.replace("of: data.a + data.b", f"of: {chain}"))
    for engine in (Engine(pack), native_candidate()(pack, 5.0)):
        started = time.perf_counter()
        engine.process(bag("e1", a="x" * 60_000, b=""), 1, 0, 0.0)
        assert time.perf_counter() - started < 0.05, type(engine).__name__


BIG = """
version: "big"
types: [acme.bag]
rules:
  - {id: above, on: [acme.bag], when: "data.x * data.x * data.x + 1 > data.x * data.x * data.x",
     severity: low, audience: ops, title: t}
  - {id: literal, on: [acme.bag], when: "1000000000000000000 * 1000000000000000000 * 1000000000000000000 + 1
       > 1000000000000000000 * 1000000000000000000 * 1000000000000000000", severity: low, audience: ops, title: t}
  - {id: third, on: [acme.bag], when: "data.x / 3 == 3074457345618258602.3333", severity: low, audience: ops, title: t}
  - {id: less, on: [acme.bag], when: "data.x * data.x - data.x * data.x < 0", severity: low, audience: ops, title: t}
"""


@pytest.mark.parametrize("x", [2**63 - 1, -(2**63), 2**53 + 1, 3, 10**18])
def test_arithmetic_past_128_bits_and_division_of_big_integers_agree(x: int) -> None:
    """The core's integers are 128 bits and its division is in floats: the reference does
    the same (it kept exact integers, so ``x*x*x + 1 > x*x*x`` held there and not in the core)."""
    pack = load_pack(BIG)
    reference, core = Engine(pack), native_candidate()(pack, 5.0)
    # a cube past 2**127 is a float, to which + 1 adds nothing; the literal's product too
    expected = {2**63 - 1: ["third"], -(2**63): [], 2**53 + 1: [], 3: ["above"], 10**18: []}[x]
    assert fired(reference, bag("e1", x=x)) == expected
    assert fired(core, bag("e1", x=x)) == expected


KEPT = """
version: "kept"
types: [acme.bag]
features:
  - {name: product, by: customer_id, agg: last, of: data.a * data.b, on: [acme.bag]}
  - {name: negated, by: customer_id, agg: first, of: 0 - data.a * data.b, on: [acme.bag]}
  - {name: remainder, by: customer_id, agg: last, of: data.a * data.b % 1000, on: [acme.bag]}
  - {name: literal, by: customer_id, agg: last, of: "[1e20, 3]", on: [acme.bag]}
  - {name: total, by: customer_id, agg: sum, of: data.c, on: [acme.bag]}
  - {name: top, by: customer_id, agg: max, of: data.c, window: 1h, on: [acme.bag]}
"""


@pytest.mark.parametrize(
    ("a", "b", "product"),
    [
        (2**40, 2**40, float(2**80)),  # past 64 bits: kept as a float
        (2**32, 2**32 - 1, 2**64 - 2**32),  # within 64 bits (unsigned): exact
        (-(2**62), 2, -(2**63)),  # the least a state holds: exact
        (-(2**62), 3, -3.0 * 2**62),  # one past it: a float
    ],
)
def test_no_number_in_an_event_makes_a_state_the_checkpoint_cannot_write(a: int, b: int, product: float) -> None:
    """What a feature keeps stays within what a state holds (msgpack's integers, -2**63 ...
    2**64-1): an integer past it (a product of two large numbers; arithmetic is exact to 2**127,
    so a remainder of one is exact) is kept as a float (a list literal's integers are at most
    10**18 since 2026-12-07), and an aggregate of
    numbers skips a text that is none. Each was poison in both engines: the event quarantined
    after the whole state was read again, and a flood of them held the processor."""
    pack = load_pack(KEPT)
    written = []
    for engine in (Engine(pack), native_candidate()(pack, 5.0)):
        engine.process(bag("e1", a=a, b=b, c="n/a"), 1, 0, 0.0)
        engine.process(bag("e2", a=a, b=b, c=2), 2, 0, 0.0)
        packed = engine.take_changes_packed()  # the state codec: it raised on a state past 64 bits
        assert packed is not None, type(engine).__name__
        written.append(packed[0])
        values = engine.features_of({"customer_id": "cus_1"}, 1_800_000_000.0)
        assert values["product"] == product, type(engine).__name__
        assert type(values["product"]) is type(product), type(engine).__name__
        assert values["remainder"] == (a * b) % 1000, type(engine).__name__
        assert (values["total"], values["top"]) == (2, 2), type(engine).__name__
    for rows in written:  # either engine restores either's checkpoint
        for engine in (Engine(pack), native_candidate()(pack, 5.0)):
            engine.restore_packed(rows)
            values = engine.features_of({"customer_id": "cus_1"}, 1_800_000_000.0)
            assert values["product"] == product, type(engine).__name__
            assert sorted(values["literal"]) == [3, 1e20], type(engine).__name__


EXTREMES = """
version: "extremes"
types: [acme.bag, acme.read]
features:
  - {name: spread, by: customer_id, agg: stats, of: data.v, on: [acme.bag]}
anomaly:
  - {name: z, kind: robust_zscore, on: [acme.bag], by: customer_id, of: data.v, min_samples: 3}
rules:
  - {id: z_high, on: [acme.bag], when: z > 3, severity: low, audience: ops, title: "z {z}"}
  - {id: spread_high, on: [acme.read], when: spread.std > 1, severity: low, audience: ops, title: "std"}
"""


@pytest.mark.parametrize(
    "values",
    [
        [0.0, 0.0, 0.0, 1e308, 1e308, 5.0, 7.0],  # half the history at its median: the mean deviation overflows
        [1e308, -1e308, 1.0, 2.0],  # the running variance past the largest float: below zero
    ],
)
def test_values_near_the_largest_float_score_and_read_alike_and_raise_in_neither(values: list[float]) -> None:
    """An assessment's poison (the reference engine raised: fsum's overflow in a robust
    z-score's fallback, the square root of a running variance below zero; the values stayed in
    the key's state, so every later event of the key raised too): both engines now give what
    the float arithmetic makes of it, alike."""
    pack = load_pack(EXTREMES)
    outcomes = []
    for engine in (Engine(pack), native_candidate()(pack, 5.0)):
        fired_here = []
        for n, v in enumerate(values):
            fired_here.append(fired(engine, bag(f"e{n}", v=v)))
            read = Event(f"r{n}", "acme.read", 1_800_000_000.0, "acme", {}, "cus_1")
            fired_here.append(fired(engine, read))
        spread = engine.features_of({"customer_id": "cus_1"}, 1_800_000_000.0)["spread"]
        outcomes.append((fired_here, msgspec.json.encode(spread)))
    assert outcomes[0] == outcomes[1]


def test_round_to_a_text_of_digits_past_64_bits_is_null_in_both() -> None:
    """The core reads a text's digits in 64 bits; the reference read any (a hostile test)."""
    cube = 'when: "data.x * data.x * data.x + 1 > data.x * data.x * data.x"'
    pack = load_pack(BIG.replace(cube, 'when: "round(data.x, data.w) != null"'))
    for engine in (Engine(pack), native_candidate()(pack, 5.0)):
        assert "above" not in fired(engine, bag("e1", x=7, w="99999999999999999999999")), type(engine).__name__
        assert "above" in fired(engine, bag("e2", x=7, w="2")), type(engine).__name__


BAGS = "features:\n  - {name: bags, on: [acme.bag], by: customer_id, agg: count}\n"
FAILS_PART_WAY = PACK.replace("rules:", BAGS + "rules:", 1)


def test_an_event_that_fails_part_way_is_undone_whole_and_undo_refuses_what_it_cannot_put_back() -> None:
    # a processor undoes the batch a poison event failed instead of reloading its checkpoint
    make = native_candidate()
    pack = load_pack(FAILS_PART_WAY)
    good = make(pack, 5.0)
    good.process(bag("e1", a=1, b=[], n=1), 1, 0, 0.0)
    rows = good.take_changes()
    (name, _, raw) = next(r for r in rows if r[0].startswith("pattern:"))
    state = msgspec.msgpack.decode(raw)
    state[1][0][1] = 5  # a step past the pattern's two: every later event of the key fails in it
    checkpoint = [(n, k, msgspec.msgpack.encode(state) if n == name else r) for n, k, r in rows if r is not None]
    core = make(pack, 5.0)
    assert not core.undo()  # no undo point: it keeps no copies
    core.undo_point()
    core.restore(checkpoint, {0: 1_800_000_000.0})
    assert not core.undo()  # restored rows keep no copies: the runtime sets the point after
    core.undo_point()
    at_checkpoint = (every_state_row(core), core.max_event_time)
    customer = {"customer_id": "cus_1"}
    with pytest.raises(Exception, match="step the pattern does not have"):
        core.process_raw(encode_event(bag("e2", a=1, b=[], n=1)), 2, 0, 0.0)
    assert core.features_of(customer, 1_800_000_000.0) == {"bags": 2}  # counted before the pattern failed
    assert core.undo()
    assert (every_state_row(core), core.max_event_time) == at_checkpoint
    assert core.features_of(customer, 1_800_000_000.0) == {"bags": 1}
    assert core.expire(1_900_000_000.0) > 0
    assert not core.undo()  # expiry keeps no copies
    assert core.take_changes()
    assert not core.undo()  # ...until the changes taken with it are committed
    core.changes_committed()
    assert core.undo()
    assert not Engine(pack).undo()  # the reference engine keeps none: its runtimes reload
