"""What one pack may ask of every event and every key, whatever its YAML's size allows: a
pack of 4,400 distinct counts by customer took 600 MB for one customer's 1,000 events, and
one of 36-term chains took seconds an event."""

from __future__ import annotations

import pytest

from ringfence.engine.pack import (
    MAX_KEY_VALUES,
    MAX_PACK_NODES,
    MAX_RULES,
    MAX_STATEFUL_DEFINITIONS,
    default_pack_text,
    load_pack,
)
from ringfence.errors import RulePackError


def features(count: int, agg: str = "count", by: str = "customer_id", extra: str = "") -> str:
    return "features:\n" + "".join(
        f"  - {{name: f{i}, on: [login.failed], by: {by}, agg: {agg}{extra}}}\n" for i in range(count)
    )


def rules(count: int, when: str = "data.ip == 'x'") -> str:
    return "rules:\n" + "".join(
        f'  - {{id: r{i}, on: [login.failed], when: "{when}", severity: low, audience: ops, title: t}}\n'
        for i in range(count)
    )


def test_the_default_pack_is_well_within_every_budget() -> None:
    load_pack(default_pack_text())


def test_stateful_definitions_are_bounded() -> None:
    load_pack('version: "x"\n' + features(MAX_STATEFUL_DEFINITIONS))
    with pytest.raises(RulePackError, match="features, anomalies and patterns: at most 1,000"):
        load_pack('version: "x"\n' + features(MAX_STATEFUL_DEFINITIONS + 1))


def test_rules_are_bounded() -> None:
    with pytest.raises(RulePackError, match="2,001 rules: at most 2,000"):
        load_pack('version: "x"\n' + rules(MAX_RULES + 1))


def test_the_parts_of_all_expressions_are_bounded() -> None:
    when = " or ".join(["data.ip == 'x'"] * 13)
    parts = load_pack('version: "x"\n' + rules(1, when)).rules[0].when.nodes
    assert 20 <= parts <= 400
    load_pack('version: "x"\n' + rules(MAX_PACK_NODES // parts, when))
    with pytest.raises(RulePackError, match="more than 50,000 parts"):
        load_pack('version: "x"\n' + rules(MAX_PACK_NODES // parts + 1, when))


def test_the_values_one_keys_states_may_hold_are_bounded() -> None:
    distinct = MAX_KEY_VALUES // 1_000
    load_pack('version: "x"\n' + features(distinct, "distinct_count", extra=", of: data.ip"))
    with pytest.raises(RulePackError, match=r"one customer_id could hold 101,000 values, over 100,000"):
        load_pack('version: "x"\n' + features(distinct + 1, "distinct_count", extra=", of: data.ip"))
    # another key's states are counted apart
    text = features(distinct, "distinct_count", extra=", of: data.ip") + "".join(
        f"  - {{name: g{i}, on: [login.failed], by: data.ip, agg: distinct_count, of: customer_id}}\n"
        for i in range(distinct)
    )
    load_pack('version: "x"\n' + text)


def test_a_pack_read_back_from_the_store_is_not_refused_by_budgets_added_since() -> None:
    text = 'version: "x"\n' + features(MAX_STATEFUL_DEFINITIONS + 1)
    assert len(load_pack(text, stored=True).features) == MAX_STATEFUL_DEFINITIONS + 1


def test_a_key_of_several_fields_counts_for_each_of_them() -> None:
    """100 distinct counts by customer_id, and 100 more by each of [customer_id, source],
    [source, customer_id]... held 500,000 values for a customer of one source."""
    by_customer = features(100, "distinct_count", extra=", of: data.ip")
    by_pair = "".join(
        f"  - {{name: p{i}, on: [login.failed], by: [customer_id, source], agg: distinct_count, of: data.ip}}\n"
        for i in range(1)
    )
    with pytest.raises(RulePackError, match=r"one customer_id could hold 101,000 values"):
        load_pack('version: "x"\n' + by_customer + by_pair)


def test_a_by_naming_a_field_twice_is_refused() -> None:
    text = 'version: "x"\nfeatures:\n  - {name: f, on: [login.failed], by: [customer_id, customer_id], agg: count}\n'
    with pytest.raises(RulePackError, match="names 'customer_id' twice"):
        load_pack(text)
    assert load_pack(text, stored=True).features[0].by == (("customer_id",), ("customer_id",))
