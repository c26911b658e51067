"""The compiled core against the reference engine on the simulator's traffic: issue 17's
differential test in its short CI mode (``ringfence bench`` runs it at full size, see
benchmarks/differential.md). And the harness's own test: a difference injected into a copy of
the reference engine is caught, at the step it shows in."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import pytest

from ringfence.bench.differential import (
    COVERAGE_PACK,
    default_packs,
    differences,
    reload_variant,
    run_simulated,
    signals_of,
    simulated,
)
from ringfence.clock import iso
from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack, load_pack
from ringfence.engine.rules import AlertSignal
from ringfence.errors import RulePackError
from ringfence.events.decode import validate_event
from ringfence.events.model import Event, decode_event
from ringfence.simulate import SCENARIOS
from tests.helpers.differential import engine_factory, every_state_row, first_mismatch, native_candidate
from tests.helpers.staged import StagedPipeline

PACKS = dict(default_packs())

# (pack, seed, events, everyday events/s, every detection fires): 44k events in all. At 1/s
# the traffic spans over an hour, long enough for the default pack's hour-long detections.
# The seeds are ones whose traffic injects every scenario (and raises every detection where the
# run says so): pick again when the simulator's scenarios change.
RUNS = [
    ("default", 14, 24_000, 1.0, True),
    ("coverage", 3, 8_000, 5.0, True),
    ("default", 4, 6_000, 5.0, False),
    ("coverage", 6, 6_000, 5.0, True),
]


@pytest.mark.parametrize(("pack", "seed", "events", "rate", "every_detection"), RUNS)
def test_the_core_matches_the_reference_on_simulated_traffic(
    pack: str, seed: int, events: int, rate: float, every_detection: bool
) -> None:
    candidate = native_candidate()
    result = run_simulated(pack, PACKS[pack], seed, events, candidate=candidate, rate_per_s=rate)
    assert result.mismatch is None, str(result.mismatch)
    counts = result.counts
    assert counts.events == events
    assert set(result.scenarios) == set(SCENARIOS)
    fired = set(result.detections)  # each compared in full: evidence, templates, related events
    assert fired == set(PACKS[pack].detection_ids) if every_detection else len(fired) >= 15
    assert counts.late > 0
    assert counts.timer_signals > 0
    assert counts.expired > 0
    assert (counts.reloads, counts.restores) == (1, 1)
    assert counts.list_edits == 1
    # a third each through process, process_raw, and runs through process_raw_many
    assert counts.events / 2 < counts.raw < 4 * counts.events / 5
    assert counts.events / 5 < counts.batched < counts.events / 2


@pytest.mark.parametrize("pack", sorted(PACKS))
def test_the_cores_keyed_stages_match_the_references(pack: str) -> None:
    """The kafka runtime runs one engine per keyed stage and joins their values for the rules
    (``process_stage``): the core's stages must raise what the reference's raise."""
    candidate = native_candidate()
    reference, staged = StagedPipeline(PACKS[pack]), StagedPipeline(PACKS[pack])
    staged.engines = {name: candidate(engine.pack, 5.0) for name, engine in reference.engines.items()}
    events, _ = simulated(6, 6_000, 300, 5.0)
    fired: set[str] = set()
    for offset, event in enumerate(events, 1):
        expected = signals_of(reference.process(event, offset, 0, event.occurred_at + 0.5))
        got = signals_of(staged.process(event, offset, 0, event.occurred_at + 0.5))
        assert differences(expected, got) == [], f"event #{offset}: {event}"
        fired |= {s["rule_id"] for s in expected}
    assert differences(signals_of(reference.advance(1e12)), signals_of(staged.advance(1e12))) == []
    assert len(fired) >= 12


# -- what the differential tests found, kept as regressions ---------------------------------------


def _ping(i: int, t: float, **data: Any) -> tuple[Event, int, float, bool]:
    raw = {"event_id": f"e{i}", "type": "acme.ping", "occurred_at": iso(t), "source": "web", "customer_id": "c1"}
    event = validate_event(msgspec.json.encode({**raw, "data": data}), now=t, custom_types=["acme.ping"])
    return event, 0, t, i % 2 == 1


PING_PACK = """
version: "1"
types: [acme.ping]
features:
  - {name: n_last, on: [acme.ping], agg: last, of: data.n * 1000000007}
  - {name: n_stats, on: [acme.ping], agg: stats, of: data.n, window: 1h}
rules:
  - id: r
    on: [acme.ping]
    when: "true"
    severity: info
    audience: ops
    title: "{n_last} {n_stats.mean} {n_stats.count}"
"""
T0 = 1_800_000_000.0


@pytest.mark.parametrize(
    ("finding", "events", "reload"),
    [
        ("a reload kept no watermarks", [_ping(0, T0, n=1), _ping(1, T0 + 1, n=2)], True),
        ("a stats field in a template rendered its name", [_ping(0, T0, n=1), _ping(1, T0 + 1, n=2)], False),
        ("integers past 64 bits became floats", [_ping(0, T0, n=9_300_000_000), _ping(1, T0 + 1, n=1)], False),
    ],
)
def test_what_the_differential_tests_found(
    finding: str, events: list[tuple[Event, int, float, bool]], reload: bool
) -> None:
    pack = load_pack(PING_PACK)
    variant = load_pack(PING_PACK.replace('version: "1"', 'version: "2"')) if reload else None
    mismatch = first_mismatch(pack, events, native_candidate(), marks=[T0 + 10], reload=variant, restore_at=1)
    assert mismatch is None, f"{finding}:\n{mismatch}"


# -- the harness can fail ---------------------------------------------------------------------------


def _replace_features(signals: Iterable[AlertSignal], change: Any) -> list[AlertSignal]:
    return [msgspec.structs.replace(s, features={k: change(v) for k, v in s.features.items()}) for s in signals]


class Defective(Engine):
    """A copy of the reference engine with a defect a subclass adds; it stays itself over a reload
    (the reference's ``reloaded`` builds a plain Engine)."""

    def reloaded(self, pack: RulePack) -> Engine:
        fresh = super().reloaded(pack)
        fresh.__class__ = type(self)
        return fresh


class NudgesFloats(Defective):
    """Evidence floats one ulp up."""

    def process(self, event: Event, offset: int, partition: int, ingested_at: float) -> list[AlertSignal]:
        nudged = _replace_features(super().process(event, offset, partition, ingested_at), _nudge)
        return nudged


def _nudge(value: Any) -> Any:
    return math.nextafter(value, math.inf) if isinstance(value, float) else value


class CountsAsFloats(Defective):
    """Whole numbers in evidence as floats: 3.0 for 3."""

    def process(self, event: Event, offset: int, partition: int, ingested_at: float) -> list[AlertSignal]:
        signals = super().process(event, offset, partition, ingested_at)
        return _replace_features(signals, lambda v: float(v) if isinstance(v, int) and not isinstance(v, bool) else v)


class LosesARow(Defective):
    def take_changes(self) -> list[tuple[str, str, bytes | None]]:
        return super().take_changes()[1:]


class EncodesALaterSeen(Defective):
    """A feature state encoded with its newest event time a millisecond later."""

    def take_changes(self) -> list[tuple[str, str, bytes | None]]:
        rows = super().take_changes()
        for i, (name, key, raw) in enumerate(rows):
            if raw is not None and ":" not in name:
                state = msgspec.msgpack.decode(raw)
                state[0] += 0.001
                rows[i] = (name, key, msgspec.msgpack.encode(state))
                break
        return rows


class CountsNoLateEvents(Defective):
    def process(self, event: Event, offset: int, partition: int, ingested_at: float) -> list[AlertSignal]:
        signals = super().process(event, offset, partition, ingested_at)
        self.late_events = 0
        return signals


class HidesAFeature(Defective):
    def features_of(self, key_fields: dict[str, Any], at: float) -> dict[str, Any]:
        values = super().features_of(key_fields, at)
        values.pop(next(iter(sorted(values)), ""), None)
        return values


class FiresTimersLate(Defective):
    def advance(self, watermark: float | None = None) -> list[AlertSignal]:
        return super().advance((self.watermark() if watermark is None else watermark) - 1.0)


class RestoresNoScores(Defective):
    def restore(self, rows: Iterable[tuple[str, str, bytes]], max_event_time: dict[int, float]) -> None:
        super().restore([r for r in rows if not r[0].startswith("anomaly:")], max_event_time)


class ReloadsAfresh(Defective):
    def reloaded(self, pack: RulePack) -> Engine:
        fresh = type(self)(pack, self.allowed_lateness_s)
        fresh.max_event_time, fresh.hits = dict(self.max_event_time), self.hits
        return fresh


class NeverLate(Defective):
    """A fast path that never reports the watermark a late event was behind."""

    def process_raw(
        self, body: bytes, offset: int, partition: int, ingested_at: float
    ) -> tuple[list[AlertSignal], float | None]:
        return self.process(decode_event(body), offset, partition, ingested_at), None


class RunsLoseTheirLastSignal(Defective):
    """A run of events (a processor's batch) that drops the last signal it raised."""

    def process_raw_many(
        self,
        bodies: Sequence[bytes],
        offsets: Sequence[int],
        partitions: Sequence[int],
        ingested_ats: Sequence[float],
    ) -> tuple[list[AlertSignal], list[tuple[int, float]]]:
        signals, late = super().process_raw_many(bodies, offsets, partitions, ingested_ats)
        return signals[:-1], late


@pytest.mark.parametrize(
    ("defect", "steps"),
    [
        (NudgesFloats, ("process",)),
        (CountsAsFloats, ("process",)),
        (LosesARow, ("take_changes",)),
        (EncodesALaterSeen, ("take_changes",)),
        (CountsNoLateEvents, ("counters",)),
        (HidesAFeature, ("features_of",)),
        (FiresTimersLate, ("process", "advance")),
        (RestoresNoScores, ("state_size after restore",)),
        (ReloadsAfresh, ("counters",)),
        (NeverLate, ("process_raw",)),
        (RunsLoseTheirLastSignal, ("process_raw_many",)),
    ],
)
def test_the_harness_catches_a_difference(defect: type[Defective], steps: tuple[str, ...]) -> None:
    result = run_simulated("coverage", PACKS["coverage"], 11, 3_000, candidate=defect)
    assert result.mismatch is not None, f"{defect.__name__} went unnoticed"
    assert result.mismatch.step.startswith(steps), str(result.mismatch)
    assert result.mismatch.diffs
    assert result.mismatch.event is not None
    assert result.mismatch.event["event_id"] in str(result.mismatch)
    assert "features (reference)" in str(result.mismatch)


def test_the_reference_against_itself_matches() -> None:
    result = run_simulated("coverage", PACKS["coverage"], 11, 3_000, candidate=Engine)
    assert result.mismatch is None, str(result.mismatch)


@pytest.mark.parametrize(
    ("expected", "got", "found"),
    [
        ({"a": 1}, {"a": 1.0}, ["$.a: expected 1 (int), got 1.0 (float)"]),
        ([True], [1], ["$[0]: expected True (bool), got 1 (int)"]),
        (0.0, -0.0, ["$: expected 0.0, got -0.0"]),
        (0.1 + 0.2, 0.3, ["$: expected 0.30000000000000004, got 0.3"]),
        ({"a": 1}, {"b": 1}, ["$.a: missing from the candidate (expected 1)", "$.b: only in the candidate (1)"]),
        ([1, 2], [1], ["$: expected 2 items, got 1"]),
        ({"x": [math.nan, "s", None]}, {"x": [math.nan, "s", None]}, []),
    ],
)
def test_values_are_compared_exactly(expected: Any, got: Any, found: list[str]) -> None:
    assert differences(expected, got) == found


def test_a_reload_changes_one_definition_and_keeps_the_others() -> None:
    pack = load_pack(COVERAGE_PACK)
    variant = reload_variant(pack)
    assert variant.version == f"{pack.version}-reloaded"
    kept = {f.signature for f in variant.features} & {f.signature for f in pack.features}
    assert len(kept) == len(pack.features) - 1
    assert Engine(pack).dropped_state_names(variant) == ["spend_sum_10m"]


NAN_PACK = """
version: "1"
types: [acme.ping]
features:
  - {name: q95, on: [acme.ping], by: customer_id, agg: quantile, of: data.v, q: 0.95, window: 400d}
anomaly:
  - name: z
    kind: robust_zscore
    by: customer_id
    of: "data.n * 10 - data.n * 10 + data.w"
    on: [acme.ping]
    min_samples: 3
    samples: 9
rules:
  - {id: r, on: [acme.ping], when: "true", severity: info, audience: ops, title: "{q95} {z}"}
"""


def test_a_nan_is_no_sample_of_a_quantile_nor_of_a_robust_z_score() -> None:
    """A hostile test: a NaN (a "nan" text in free-form data, inf - inf from an expression) in a
    quantile's samples made the reference read NaN and the compiled core drop its smallest
    sample for good once the NaN aged out; in a robust z-score's history it made every later
    score 99 in the reference and an ordinary one in the core. A NaN is skipped as a missing
    value, in both."""
    values = [300.0 - i for i in range(300)]  # descending: a lost smallest sample shows
    events = [_ping(0, T0, v="nan", n=1e308, w=1.0)]
    events += [_ping(i, T0 + i, v=v, n=1e308 if i in (2, 5) else 0.0, w=float(i % 7)) for i, v in enumerate(values, 1)]
    pack = load_pack(NAN_PACK)
    assert first_mismatch(pack, events, native_candidate(), marks=[T0 + 400], restore_at=150) is None
    last = sorted(values[-256:])
    for kind in ("python", "native"):
        engine = engine_factory(kind)(pack)
        scores = []
        for event, offset, now, _ in events:
            for hit in engine.process(event, offset, 0, now):
                scores.append(hit.title.split(" ")[1])
        assert engine.features_of({"customer_id": "c1"}, T0 + 400)["q95"] == last[int(0.95 * 256)], kind
        assert scores.count("99") < 3, kind  # not every score after the NaN


def test_both_engines_keep_a_distinct_counts_long_values_by_the_same_digest() -> None:
    """A distinct value past 256 characters is kept by its SHA-256: the same text in both
    engines (code points counted, not bytes), so their states agree and restore into each other."""
    pack = load_pack("""
version: "1"
types: [acme.ping]
features:
  - {name: seen, on: [acme.ping], by: customer_id, agg: distinct_count, of: data.v, window: 1h}
  - {name: ever, on: [acme.ping], by: customer_id, agg: distinct_count, of: data.v}
rules:
  - {id: r, on: [acme.ping], when: "seen > 2", severity: info, audience: ops, title: "{seen} {ever}"}
""")
    texts = ["é" * 256, "é" * 257, "e" * 300, "é" * 200 + "x" * 57, "é" * 257, "€" * 100, 12345, "é" * 256]
    events = [_ping(i, T0 + i, v=v) for i, v in enumerate(texts)]
    assert first_mismatch(pack, events, native_candidate(), marks=[T0 + 4000], restore_at=4) is None


INF_PACK = """
version: "1"
types: [acme.ping]
anomaly:
  - name: z
    kind: robust_zscore
    by: customer_id
    of: "data.n * 10 + data.w"
    on: [acme.ping]
    min_samples: 3
    samples: 9
rules:
  - {id: r, on: [acme.ping], when: "z > 8", severity: info, audience: ops, title: "{z}"}
"""


def test_an_infinity_in_a_robust_z_scores_history_scores_alike_in_both_engines() -> None:
    """A hostile test: with an infinity in a robust z-score's history (``data.n * 10`` past the
    largest float) and most of it equal, the fallback spread is a mean of deviations, one of them
    infinite: the reference's ``math.fsum`` makes it infinite (an ordinary value then scores 0),
    the core's sum made it NaN, and every later event of the key scored 99, a false alert each."""
    pack = load_pack(INF_PACK)
    events = [_ping(i, T0 + i, n=0.0, w=5.0) for i in range(5)]
    events += [_ping(5, T0 + 5, n=1e308, w=0.0)]  # inf
    events += [_ping(i, T0 + i, n=0.0, w=5.0 + i % 2) for i in range(6, 12)]
    assert first_mismatch(pack, events, native_candidate(), restore_at=7) is None
    for kind in ("python", "native"):
        engine = engine_factory(kind)(pack)
        hits = [hit for event, offset, now, _ in events for hit in engine.process(event, offset, 0, now)]
        assert [h.event_id for h in hits] == ["e5"], kind  # the infinity itself, and no ordinary value after it


def _membership_pack(literal: str) -> str:
    return f"""
version: "1"
types: [acme.ping]
rules:
  - id: r
    on: [acme.ping]
    when: "data.a * data.b + 1 in [{literal}, 7]"
    severity: info
    audience: ops
    title: "hit"
"""


@pytest.mark.parametrize(
    ("literal", "hit"),
    [
        ("1e999", False),
        ("1267650600228229401496703205377", True),  # 2**100 + 1: exact, as the product
        ("9223372036854775813", False),  # past 63 bits, within 64
        ("170141183460469231731687303715884105728", False),  # 2**127: a float exactly, past the integers
        ("1" + "0" * 400, False),  # past the largest float: equals no number
    ],
)
def test_a_list_literal_number_past_64_bits_is_refused_in_a_new_pack_and_held_exactly_in_a_stored_one(
    literal: str, hit: bool
) -> None:
    """A hostile test: list literals' numbers had no bound. The plan (JSON) made 1e999 null and
    read 2**100 + 1 as a float, so ``x in [...]`` differed between the engines, and a number past
    the largest float failed the core's plan: a pack ``PUT /v1/rules`` took stopped the
    processor at its reload, and every restart after. A new pack's list holds integers up to
    10**18, as any literal, and finite floats; a stored one's numbers are spelled out in the
    plan, and both engines agree on them."""
    from ringfence.engine.native import make_engine

    with pytest.raises(RulePackError, match="list literal's floats must be finite and its integers at most"):
        load_pack(_membership_pack(literal))
    pack = load_pack(_membership_pack(literal), stored=True)
    events = [_ping(0, T0, a=2**50, b=2**50), _ping(1, T0 + 1, a=2**62, b=2), _ping(2, T0 + 2, a=6, b=1)]
    assert first_mismatch(pack, events, native_candidate()) is None
    engine = make_engine(pack, 5.0, engine="native")
    hits = [h.event_id for e, offset, now, _ in events for h in engine.process(e, offset, 0, now)]
    assert hits == (["e0", "e2"] if hit else ["e2"])  # e2: 6 * 1 + 1 is the list's 7


def test_a_list_literal_holds_negative_numbers_in_both_engines() -> None:
    """``-1`` parses as a negation of 1, so a list's negative number was refused as no number
    (``data.delta in [-100, 100]``); a negated string, a double negation and an expression stay
    refused. Both engines read the negatives alike, past 64 bits and at zero too."""
    assert _rules("data.a in [True, -1]")  # a bool was always taken: stored packs may hold one
    for item in ("-'a'", "--1", "-(1)+1", "-True"):
        with pytest.raises(RulePackError, match="list literals may only hold strings and numbers"):
            _rules(f"data.a in [{item}]")
    with pytest.raises(RulePackError, match="list literal's floats must be finite and its integers at most"):
        _rules("data.a in [-1e999]")
    stored = load_pack(_membership_pack("-" + str(2**100 + 1)), stored=True)
    events = [_ping(0, T0, a=-(2**50), b=2**50), _ping(1, T0 + 1, a=-8, b=1), _ping(2, T0 + 2, a=6, b=1)]
    assert first_mismatch(stored, events, native_candidate()) is None
    pack = _rules("data.a in [-8, 'x', 3]", "data.a * 1.0 in [-0.0]", "data.a in [-2.5]", "data.a not in [-8]")
    events = [_ping(i, T0 + i, a=a, b=1) for i, a in enumerate((-8, 0, -2.5, 8))]
    assert first_mismatch(pack, events, native_candidate()) is None
    for kind in ("python", "native"):
        engine = engine_factory(kind)(pack)
        hits = [(h.event_id, h.rule_id) for e, offset, now, _ in events for h in engine.process(e, offset, 0, now)]
        assert hits == [("e0", "r0"), ("e1", "r1"), ("e1", "r3"), ("e2", "r2"), ("e2", "r3"), ("e3", "r3")], kind


def _rules(*whens: str, features: str = "") -> RulePack:
    rules = "\n".join(
        f'  - {{id: r{i}, on: [acme.ping], when: "{w}", severity: info, audience: ops, title: "{i}"}}'
        for i, w in enumerate(whens)
    )
    return load_pack(f'version: "1"\ntypes: [acme.ping]\n{features}rules:\n{rules}\n')


_A, _B = -(2**63), -(2**63 - 2**52)  # data.a * data.b * 2 = 2**127 - 2**116: 1.7006e38, a float exactly
_BIG, _LEAST = "data.a * data.b * 2", "data.a * data.a * -2"  # the latter -2**127, the least integer


def test_integers_near_2_127_compare_divide_and_match_as_the_reference() -> None:
    """A hostile test: the core took any float from 1.7e38 on as above every integer, but its
    integers reach 2**127 - 1 (1.7014e38): between the two, comparisons, min/max and list
    membership differed. And -2**127 % -1 (the one remainder that overflows) was -0.0 in the
    core, the int 0 in the reference; abs(-2**127) was the int 2**127 in the reference, past the
    integers arithmetic holds (a float in the core, as every result past them)."""
    assert _A * _B * 2 > 1.7e38
    assert float(_A * _B * 2) == _A * _B * 2
    whens = [
        f"{_BIG} > 1.7e38",
        f"{_BIG} == {_BIG} * 1.0",
        f"{_LEAST} == -1.7014118346046923e38",
        f"max({_BIG}, 1.7e38) == {_BIG}",
        f"min({_BIG}, 1.7e38) == 1.7e38",
        f"{_BIG} in [{float(_A * _B * 2)!r}]",
        f"(abs({_LEAST}) - 1) % 2 == 1",
    ]
    features = f'features:\n  - {{name: d, on: [acme.ping], agg: distinct_count, of: "({_LEAST}) % -1"}}\n'
    pack = _rules(*whens, "d == 1", features=features)
    events = [_ping(0, T0, a=_A, b=_B)]
    assert first_mismatch(pack, events, native_candidate()) is None
    for kind in ("python", "native"):
        engine = engine_factory(kind)(pack)
        event, offset, now, _ = events[0]
        hits = sorted(h.rule_id for h in engine.process(event, offset, 0, now))
        assert hits == ["r0", "r1", "r2", "r3", "r4", "r5", "r7"], kind  # abs(-2**127) is a float: even


def test_a_float_whose_shortest_texts_tie_renders_as_pythons_repr() -> None:
    """A hostile test: of a float's two shortest texts equally near its exact value
    (2222222222222222.25: ".2" and ".3"), the core took the upper and Python's repr the even
    one: a state key, a distinct value or a title differed between the engines."""
    ties = [2222222222222222.25, -2222222222222222.25, 2222222222222222.75, 1111111111111111.125, 0.3, 1e16 + 2]
    pack = load_pack("""
version: "1"
types: [acme.ping]
features:
  - {name: n, on: [acme.ping], by: data.x, agg: count, window: 1h}
  - {name: d, on: [acme.ping], agg: distinct_count, of: data.x, window: 1h}
rules:
  - {id: r, on: [acme.ping], when: "true", severity: info, audience: ops, title: "{data.x} {n} {d}"}
""")
    events = [_ping(i, T0 + i, x=x) for i, x in enumerate(ties + ties)]
    assert first_mismatch(pack, events, native_candidate(), restore_at=len(ties)) is None
    engine = engine_factory("native")(pack)
    for event, offset, now, _ in events[: len(ties)]:
        engine.process(event, offset, 0, now)
    keys = {key for name, key in every_state_row(engine) if name.startswith("n#")}
    assert keys == {repr(x) for x in ties}


def test_two_stats_with_infinities_or_nans_compare_as_the_reference() -> None:
    """A hostile test: the core compared two stats values as JSON, where NaN, inf and -inf are
    all null, so {mean: inf} == {mean: -inf} held in the core (a false alert), not in the
    reference; so did a stats value and an object of data with a null mean. On a review: the
    reference's ``a == a`` held with a NaN mean (Python's identity shortcut), the core's not."""
    pack = load_pack("""
version: "1"
types: [acme.ping]
features:
  - {name: a, on: [acme.ping], agg: stats, of: data.x}
  - {name: b, on: [acme.ping], agg: stats, of: data.y}
rules:
  - {id: r, on: [acme.ping], when: "a == b", severity: info, audience: ops, title: "{a} {b}"}
  - {id: s, on: [acme.ping], when: "a == a", severity: info, audience: ops, title: "{a}"}
  - {id: o, on: [acme.ping], when: "a == data.o or data.o == a", severity: info, audience: ops, title: "{a}"}
""")
    obj = {"count": 1, "mean": None, "std": 0.0}  # what JSON made of a NaN or infinite mean
    for x, y in [("inf", "-inf"), ("nan", "nan"), ("nan", "inf"), ("1", "1.0")]:
        event = _ping(0, T0, x=x, y=y, o=obj)
        assert first_mismatch(pack, [event], native_candidate()) is None, (x, y)
    one = _ping(0, T0, x="1", y="2", o={"count": 1, "mean": 1, "std": 0})
    for kind in ("python", "native"):  # (a NaN is no number equal to itself, in a stats value too)
        hits = [h.rule_id for h in engine_factory(kind)(pack).process(one[0], 0, 0, T0)]
        assert sorted(hits) == ["o", "s"], kind
