"""``ringfence.testing``: the helpers users' own rule-pack tests run on."""

from __future__ import annotations

import ast
import doctest
import importlib.util
from pathlib import Path

import pytest

from ringfence import testing
from ringfence.engine import load_pack
from ringfence.engine.rules import Mode
from ringfence.errors import EventError
from ringfence.testing import event, run_pack

T0 = 1_800_000_000.0
PACK = """
version: t1
features:
  - {name: card_declines_10m, on: [card.authorization], by: data.card_id, agg: count, window: 10m,
     where: not data.approved}
rules:
  - id: card_testing
    on: [card.authorization]
    when: data.approved and card_declines_10m >= 3
    severity: critical
    audience: fraud
    title: "approval after {card_declines_10m} declines"
    dedup: "{data.card_id}"
  - id: large_payment_trial
    on: [card.authorization]
    when: data.amount >= 1000
    severity: low
    audience: fraud
    title: large
    mode: shadow
patterns:
  - id: contact_without_login
    kind: absence
    by: customer_id
    within: 10m
    after: {name: change, on: [contact.changed]}
    expect: {on: [login.succeeded]}
    severity: medium
    audience: security
    title: "no login after {change.event_id}"
"""


def card_testing(card: str = "tok_9") -> list[dict[str, object]]:
    declines = [event(at=T0 + i, card_id=card, approved=False, amount="1.00") for i in range(3)]
    return [*declines, event(at=T0 + 10, card_id=card, amount="1.00")]


def test_a_pack_s_yaml_or_the_loaded_pack_runs_the_events_as_the_server_would() -> None:
    for pack in (PACK, load_pack(PACK)):
        signals = run_pack(pack, card_testing())
        assert [(s.rule_id, s.title, s.dedup_key) for s in signals] == [
            ("card_testing", "approval after 3 declines", "tok_9")
        ]


def test_events_may_be_json_text_and_shadow_hits_are_returned_marked_as_such() -> None:
    import json

    signals = run_pack(PACK, [json.dumps(event(at=T0, amount="2500.00"))])
    assert [(s.rule_id, s.mode) for s in signals] == [("large_payment_trial", Mode.SHADOW)]


def test_an_invalid_event_is_refused_naming_its_field() -> None:
    with pytest.raises(EventError, match="customer_id"):
        run_pack(PACK, [event(at=T0, customer_id=None)])


def test_absences_fire_when_event_time_passes_their_deadline_or_until() -> None:
    change = event("contact.changed", at=T0, channel="app")
    assert run_pack(PACK, [change]) == []
    assert run_pack(PACK, [change], until=T0 + 599) == []
    fired = run_pack(PACK, [change], until=T0 + 601)
    assert [(s.rule_id, s.occurred_at) for s in fired] == [("contact_without_login", T0 + 600)]
    on_time = run_pack(PACK, [change, event("login.succeeded", at=T0 + 60)], until=T0 + 3600)
    assert on_time == []


def test_event_times_are_checked_against_now_only_when_it_is_given() -> None:
    future = [event(at=T0 + 3600, amount="2500.00")]
    assert len(run_pack(PACK, future)) == 1
    with pytest.raises(EventError, match="occurred_at"):
        run_pack(PACK, future, now=T0)


def test_the_documented_example_holds() -> None:
    assert doctest.testmod(testing, raise_on_error=True).attempted >= 1


def test_the_helpers_depend_on_nothing_above_the_engine() -> None:
    """Every ringfence module ``ringfence.testing`` imports, directly or not, is the engine's or
    below it (the root package's ``__init__`` re-exports more, but is no dependency)."""
    below = {"testing", "engine", "events", "errors", "clock", "config", "safe_yaml", "private_files"}
    seen, todo = set(), ["ringfence.testing"]
    while todo:
        name = todo.pop()
        spec = importlib.util.find_spec(name)
        if name in seen or spec is None or spec.origin is None:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(Path(spec.origin).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "ringfence":  # from ringfence import safe_yaml
                todo += [f"ringfence.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ringfence."):
                todo.append(node.module)
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("ringfence.")]
    assert {m.split(".")[1] for m in seen} <= below, sorted(seen)
