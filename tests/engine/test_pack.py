"""Rule packs load as a whole; a bad one fails naming the rule and the position."""

from __future__ import annotations

import pytest

from ringfence.engine import default_pack_text, load_pack
from ringfence.engine.anomaly import AnomalyKind
from ringfence.engine.features import Aggregation
from ringfence.engine.patterns import PatternKind
from ringfence.engine.rules import Audience, Mode, Severity
from ringfence.errors import RulePackError

BASE = """
version: "t1"
lists:
  risky: [IR]
features:
  - name: auths_10m
    on: [card.authorization]
    by: data.card_id
    agg: count
    window: 10m
rules:
  - id: velocity
    on: [card.authorization]
    when: auths_10m >= 3
    severity: high
    audience: fraud
    title: "{auths_10m} auths"
"""


def test_the_default_pack_loads_and_covers_every_audience() -> None:
    pack = load_pack(default_pack_text())
    assert len(pack.rules) >= 10
    assert {r.output.audience for r in pack.rules} == {"fraud", "aml", "security", "ops", "customer"}


def test_closed_sets_load_as_their_enums() -> None:
    pack = load_pack(default_pack_text())
    velocity = pack.rule("card_velocity")
    assert velocity is not None
    assert (velocity.output.severity, velocity.output.mode) == (Severity.HIGH, Mode.LIVE)
    outputs = [d.output for d in (*pack.rules, *pack.patterns)]
    assert {(type(o.severity), type(o.audience), type(o.mode)) for o in outputs} == {(Severity, Audience, Mode)}
    assert {type(p.kind) for p in pack.patterns} == {PatternKind}
    assert {type(a.kind) for a in pack.anomalies} == {AnomalyKind}
    assert {type(f.agg) for f in pack.features} == {Aggregation}


def test_a_valid_pack_loads_with_version_and_digest() -> None:
    pack = load_pack(BASE)
    assert pack.version == "t1"
    assert len(pack.digest) == 16
    assert pack.rule("velocity") is not None
    assert pack.lists == {"risky": frozenset({"IR"})}


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("when: auths_10m >= 3", "when: auths_1h >= 3", r"rules\[0\] \(velocity\): unknown name 'auths_1h'"),
        ("when: auths_10m >= 3", "when: data.nope > 1", "unknown field 'data.nope'"),
        ("when: auths_10m >= 3", "when: auths_10m >=", "syntax error"),
        ("severity: high", "severity: urgent", "severity must be one of"),
        ("audience: fraud", "audience: marketing", "audience must be one of"),
        ("agg: count", "agg: median", r"features\[0\] \(auths_10m\): unknown agg 'median'"),
        ("window: 10m", "window: 10 minutes", "invalid duration"),
        # a hostile test: its buckets numbered past 2**64 (every event quarantined, or saturated)
        ("window: 10m", "window: 0.000000001s", r"window: '0.000000001s' is under 1s"),
        ("window: 10m", "window: 0.5s", r"window: '0.5s' is under 1s"),
        ("window: 10m", "window: 0s", "must be more than 0s and at most 400d"),
        ("on: [card.authorization]\n    when", "on: [card.cloned]\n    when", "unknown event type 'card.cloned'"),
        ('title: "{auths_10m} auths"', 'title: "{__class__} auths"', "placeholder"),
        ("id: velocity", "id: Velocity!", "rule id must be lower_snake_case"),
        ('version: "t1"', "", "missing required field `version`"),
        ('version: "t1"', 'version: "t1\u200b"', r"version 't1\\u200b' must be 1 to 64 letters"),  # invisible
        ('version: "t1"', f'version: "{"9" * 65}"', "must be 1 to 64 letters"),  # a label, not a payload
        ('version: "t1"', 'version: "release one"', "must be 1 to 64 letters"),
        ("by: data.card_id", "by: card_id", "'by' must be an envelope field"),
    ],
)
def test_broken_packs_fail_with_a_named_error(old: str, new: str, message: str) -> None:
    broken = BASE.replace(old, new)
    assert broken != BASE
    with pytest.raises(RulePackError, match=message):
        load_pack(broken)


def test_duplicate_rule_ids_are_refused() -> None:
    rule_block = BASE.split("rules:\n")[1]
    with pytest.raises(RulePackError, match=r"rules\[1\] \(velocity\): duplicate name 'velocity'"):
        load_pack(BASE + rule_block)


@pytest.mark.parametrize("text", ["{", "- a\n- b", "version: [1", "!!python/object:os.system {}"])
def test_unreadable_yaml_is_a_pack_error(text: str) -> None:
    with pytest.raises(RulePackError):
        load_pack(text)


def test_on_stays_a_key_and_is_not_read_as_boolean() -> None:
    pack = load_pack(BASE)
    assert pack.rules[0].on == frozenset({"card.authorization"})


def test_a_stored_pack_with_a_window_under_a_second_still_loads() -> None:
    """Windows under a second are refused coming in since a hostile test; a pack stored before
    is read as it came, so a restart is never refused for it."""
    short = BASE.replace("window: 10m", "window: 0.5s")
    with pytest.raises(RulePackError):
        load_pack(short)
    assert load_pack(short, stored=True).features[0].window == 0.5
