"""The engine: features before rules, deterministic signals, lateness, state round trips."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from ringfence.engine import AlertSignal, Engine, load_pack, load_pack_file
from ringfence.engine.rules import Audience, Mode, Severity
from ringfence.errors import RulePackError
from ringfence.events import validate_event
from ringfence.testing import event
from tests.helpers.factories import T0, ev

PACK = load_pack("""
version: "t1"
lists:
  risky: [IR, KP]
features:
  - name: auths_10m
    on: [card.authorization]
    by: data.card_id
    agg: count
    window: 10m
  - name: prev_country
    on: [card.authorization]
    by: customer_id
    agg: last
    of: data.merchant.country
rules:
  - id: velocity
    on: [card.authorization]
    when: auths_10m >= 3
    severity: high
    audience: fraud
    title: "{auths_10m} auths on {data.card_id}"
    dedup: "{data.card_id}"
    labels: {card: "{data.card_id}"}
  - id: risky_country
    on: [card.authorization]
    when: data.merchant.country in lists.risky
    severity: medium
    audience: fraud
    title: "risky {data.merchant.country} after {prev_country}"
  - id: shadow_big
    on: [card.authorization]
    when: data.amount > 100
    severity: low
    audience: fraud
    title: big
    mode: shadow
""")


def card(t: float, card_id: str = "tok_1", country: str = "FR", amount: str = "10.00", customer: str = "c1"):  # type: ignore[no-untyped-def]
    return ev(
        at=T0 + t,
        card_id=card_id,
        amount=amount,
        customer_id=customer,
        merchant={"id": "m", "mcc": "5411", "country": country},
    )


def test_a_rule_fires_when_its_feature_crosses_the_threshold() -> None:
    engine = Engine(PACK)
    hits = [engine.process(card(i), i, 0, 0.0) for i in range(4)]
    assert [len(h) for h in hits] == [0, 0, 1, 1]
    signal = hits[2][0]
    assert signal.rule_id == "velocity"
    assert signal.title == "3 auths on tok_1"
    assert signal.dedup_key == "tok_1"
    assert signal.labels == {"card": "tok_1"}
    assert signal.features == {"auths_10m": 3}
    assert signal.offset == 2


def test_features_are_kept_per_key() -> None:
    engine = Engine(PACK)
    for i in range(2):
        engine.process(card(i, card_id="tok_a"), i, 0, 0.0)
    assert engine.process(card(3, card_id="tok_b"), 3, 0, 0.0) == []


def test_last_gives_the_previous_event_value() -> None:
    engine = Engine(PACK)
    engine.process(card(0, country="DE"), 0, 0, 0.0)
    (signal,) = engine.process(card(10, country="IR", card_id="tok_2"), 1, 0, 0.0)
    assert signal.title == "risky IR after DE"


def test_shadow_rules_emit_shadow_signals_and_count_hits() -> None:
    engine = Engine(PACK)
    (signal,) = engine.process(card(0, amount="500.00"), 0, 0, 0.0)
    assert signal.mode == "shadow"
    assert engine.hits == {("shadow_big", "shadow"): 1}


def test_signals_carry_the_pack_s_closed_sets_as_enums_spelt_as_in_the_pack() -> None:
    (signal,) = Engine(PACK).process(card(0, amount="500.00"), 0, 0, 0.0)
    assert (signal.severity, signal.audience, signal.mode) == (Severity.LOW, Audience.FRAUD, Mode.SHADOW)
    encoded = msgspec.json.encode(signal)
    assert b'"severity":"low","audience":"fraud","mode":"shadow"' in encoded
    assert msgspec.json.decode(encoded, type=AlertSignal) == signal


def test_events_behind_the_watermark_are_late_but_still_processed() -> None:
    engine = Engine(PACK, allowed_lateness_s=5.0)
    engine.process(card(100), 0, 0, 0.0)
    assert not engine.is_late(card(96), 0)  # within allowed lateness
    late_event = card(50)
    assert engine.is_late(late_event, 0)
    assert not engine.is_late(late_event, 1)  # watermarks are per partition
    engine.process(late_event, 1, 0, 0.0)
    (signal,) = engine.process(card(101), 2, 0, 0.0)
    assert signal.features == {"auths_10m": 3}  # the late event still counted in its window
    assert engine.late_events == 1


def test_state_restored_from_changes_gives_the_same_results() -> None:
    first = Engine(PACK)
    for i in range(2):
        first.process(card(i), i, 0, 0.0)
    rows = [(f, k, s) for f, k, s in first.take_changes() if s is not None]
    second = Engine(PACK)
    second.restore(rows, dict(first.max_event_time))
    third = card(2)
    assert second.process(third, 2, 0, 0.0) == first.process(third, 2, 0, 0.0) != []


def test_expired_keys_are_dropped_and_reported_as_deletions() -> None:
    engine = Engine(PACK)
    engine.process(card(0), 0, 0, 0.0)
    engine.take_changes()
    assert engine.expire(watermark := T0 + 3600) == 1
    assert watermark
    assert engine.take_changes() == [(engine.persisted_names["auths_10m"], "tok_1", None)]
    assert "tok_1" not in engine.states["auths_10m"]


def test_features_of_a_customer_are_explainable() -> None:
    engine = Engine(PACK)
    engine.process(card(0, country="DE"), 0, 0, 0.0)
    assert engine.features_of({"customer_id": "c1"}, T0 + 1) == {"prev_country": "DE"}


def test_persisted_state_names_are_the_same_in_every_process() -> None:
    """A restart must find its state: names may not depend on hash randomisation."""
    import subprocess
    import sys

    script = (
        "from ringfence.engine import Engine, load_pack_file; import json; "
        "print(json.dumps(Engine(load_pack_file(None)).persisted_names, sort_keys=True))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


def test_persisted_state_names_digest_plain_values_only() -> None:
    """Names digest the repr of each definition's signature: an enum there (whose repr names
    its class) would rename, and so lose, every state when the code's types change."""

    def leaves(value: Any) -> Iterator[Any]:
        if isinstance(value, tuple | list):
            for item in value:
                yield from leaves(item)
        else:
            yield value

    pack = load_pack_file(None)
    for spec in [*pack.features, *pack.anomalies, *pack.patterns]:
        assert {type(v) for v in leaves(spec.signature)} <= {str, int, float, type(None)}, spec.state_name


def test_a_reloaded_engine_keeps_the_state_of_unchanged_definitions_only() -> None:
    engine = Engine(PACK)
    for i in range(2):
        engine.process(card(i), i, 0, 0.0)
    changed = load_pack(PACK.text.replace("window: 10m", "window: 20m").replace('version: "t1"', 'version: "t2"'))
    assert engine.dropped_state_names(changed) == ["auths_10m"]
    reloaded = engine.reloaded(changed)
    assert reloaded.states["prev_country"] is engine.states["prev_country"]
    assert reloaded.states["auths_10m"] == {}
    same = load_pack(PACK.text.replace('version: "t1"', 'version: "t3"'))
    kept = engine.reloaded(same)
    assert kept.process(card(2), 2, 0, 0.0)[0].features == {"auths_10m": 3}


OVERFLOW_PACK = load_pack("""
version: o1
features:
  - {name: merchant_volume, by: data.merchant.id, agg: sum, of: data.amount * 1e301}
  - {name: merchant_spread, by: data.merchant.id, agg: sum, of: data.amount * 1e308 - data.amount * 1e308}
  - {name: merchant_low, by: data.merchant.id, agg: min, of: 0 - data.amount * 1e308}
  - {name: customer_cards_1h, by: customer_id, agg: count, window: 1h, on: [card.authorization]}
rules:
  - id: merchant_volume_seen
    on: [card.authorization]
    when: "true"
    severity: low
    audience: ops
    title: "{merchant_volume} {merchant_spread} {merchant_low}"
    dedup: "{event_id}"
    labels: {volume: "{merchant_volume}"}
  - id: customer_busy
    on: [card.authorization]
    when: customer_cards_1h >= 3
    severity: high
    audience: fraud
    title: "{customer_id} busy"
""")


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_shared_keys_overflowed_feature_is_shown_not_failing_every_event_of_the_key(kind: str) -> None:
    """A merchant's sum overflows to infinity (a pack's arithmetic on large amounts): the
    events of that merchant still run every rule, and templates show inf, -inf and nan as
    Python's str() does (before, every later event of the merchant failed, and was quarantined
    with its customer's detections: `cannot convert float infinity to integer`)."""
    from tests.helpers.differential import engine_factory

    engine = engine_factory(kind)(OVERFLOW_PACK)
    out = []
    for i in range(3):
        e = ev("card.authorization", at=T0 + i, customer_id="c1", amount="9000000.00")
        out += engine.process(e, i, 0, T0 + i)
    seen = [s for s in out if s.rule_id == "merchant_volume_seen"]
    assert [s.title.split(" ", 1)[1] for s in seen] == ["nan -inf"] * 3
    assert [s.title.split(" ", 1)[0] == "inf" for s in seen] == [False, True, True]
    assert seen[-1].labels["volume"] == "inf"
    assert [s.title for s in out if s.rule_id == "customer_busy"] == ["c1 busy"]


CUSTOMER_PACK = load_pack("""
version: "t1"
rules:
  - id: salary
    on: [deposit.received]
    when: data.method == "salary"
    severity: info
    audience: customer
    title: "Salary received: {data.amount}"
    dedup: "{event_id}"
  - id: deposit_seen
    on: [deposit.received]
    when: "true"
    severity: low
    audience: ops
    title: "deposit {event_id}"
    dedup: "{event_id}"
  - id: currency_seen
    on: [deposit.received]
    when: "true"
    severity: info
    audience: customer
    title: "{data.currency}"
    dedup: "{data.currency}"
""")


@pytest.mark.parametrize("kind", ["python", "native"])
def test_alerts_keyed_by_an_event_id_or_for_customers_never_merge_two_producers_or_customers(kind: str) -> None:
    """A hostile test: the default pack's customer notifications were deduplicated on
    ``{event_id}`` alone, and ids are unique per producer only: two producers' ``evt-0001``
    merged two customers' salary notices into one alert, the second's amount in the first's
    title, the second customer told nothing. ``{event_id}`` is keyed with its source, and an
    alert for the customer audience with its customer."""
    from tests.helpers.differential import engine_factory

    engine = engine_factory(kind)(CUSTOMER_PACK)
    out = []
    for i, (source, customer) in enumerate((("web", "cus_a"), ("core", "cus_b"))):
        e = ev("deposit.received", at=T0 + i, customer_id=customer, source=source, event_id="evt-0001", method="salary")
        out += engine.process(e, i, 0, T0 + i)
    keys = {
        rule: {s.dedup_key for s in out if s.rule_id == rule} for rule in ("salary", "deposit_seen", "currency_seen")
    }
    assert keys["salary"] == {"cus_a\x1fweb\x1fevt-0001", "cus_b\x1fcore\x1fevt-0001"}
    assert keys["deposit_seen"] == {"web\x1fevt-0001", "core\x1fevt-0001"}  # not a customer's: its source only
    assert keys["currency_seen"] == {"cus_a\x1fEUR", "cus_b\x1fEUR"}


PAYEE_PACK = load_pack("""
version: "t1"
rules:
  - id: payee_seen
    on: [payee.added]
    when: "true"
    severity: low
    audience: fraud
    title: "{customer_id} added {data.payee_id}"
    dedup: "{customer_id}:{data.payee_id}"
  - id: customer_seen
    on: [payee.added]
    when: "true"
    severity: low
    audience: fraud
    title: "{customer_id}"
    dedup: "{customer_id}"
  - id: payee_country
    on: [payee.added]
    when: "true"
    severity: low
    audience: fraud
    title: "{data.payee_id}"
    dedup: "{data.payee_id}:{data.payee_country}{data.payee_id}"
""")


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_dedup_template_naming_the_customer_among_other_text_never_merges_two_customers(kind: str) -> None:
    """A hostile test: ids may hold ":", so "{customer_id}:{data.payee_id}" rendered the same
    for ("cus:7", "pay_1") and ("cus", "7:pay_1"): the second customer's alert merged into the
    first's, its payee in their title. Such a template is keyed by the customer first, alone,
    and in every template of several placeholders a value's characters that the template's
    text holds are escaped (U+001E), so two tuples of values are two keys, in both engines;
    "{customer_id}" by itself keeps its key."""
    from tests.helpers.differential import engine_factory

    engine = engine_factory(kind)(PAYEE_PACK)
    out = []
    for i, (customer, payee) in enumerate((("cus:7", "pay_1"), ("cus", "7:pay_1"))):
        e = ev("payee.added", at=T0 + i, customer_id=customer, payee_id=payee, payee_country="GB")
        out += engine.process(e, i, 0, T0 + i)
    keys = [s.dedup_key for s in out if s.rule_id == "payee_seen"]
    assert keys == ["cus\x1e:7\x1fcus\x1e:7:pay_1", "cus\x1fcus:7\x1e:pay_1"]
    assert [s.dedup_key for s in out if s.rule_id == "customer_seen"] == ["cus:7", "cus"]
    # any two values: a value's character that the template's own text holds is escaped, and
    # placeholders side by side are parted; the same values are the same key
    more = [("c1", "p:GB", "GB"), ("c2", "p", "GB"), ("c3", "p", "GB")]
    for i, (customer, payee, country) in enumerate(more, 2):
        e = ev("payee.added", at=T0 + i, customer_id=customer, payee_id=payee, payee_country=country)
        out += engine.process(e, i, 0, T0 + i)
    countries = [s.dedup_key for s in out if s.rule_id == "payee_country"]
    assert countries == [
        "pay_1:GB\x1fpay_1",
        "7\x1e:pay_1:GB\x1f7\x1e:pay_1",
        "p\x1e:GB:GB\x1fp\x1e:GB",
        "p:GB\x1fp",
        "p:GB\x1fp",
    ]


LONG_KEY_PACK = load_pack("""
version: "t1"
rules:
  - id: failed
    on: [login.failed]
    when: "true"
    severity: low
    audience: fraud
    title: "{data.device_id}"
    dedup: "{data.method}:{data.reason}:{data.device_id}"
""")


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_dedup_key_past_its_length_ends_in_a_digest_of_it_all_never_cut(kind: str) -> None:
    """A review: a key was cut at 1,000 characters, and escaping may double a value's length,
    so two devices' sign-ins (methods and reasons of 256 colons) were one key, whatever came
    last. Past 1,000 characters a key is its head and the SHA-256 of it all, in both engines;
    a template holding the key's own separators is refused in a new pack."""
    from tests.helpers.differential import engine_factory

    engine = engine_factory(kind)(LONG_KEY_PACK)
    out = []
    for i, (customer, device) in enumerate((("cus_a", "dev_A"), ("cus_b", "dev_B"), ("cus_c", "dev_A"))):
        e = ev(
            "login.failed",
            at=T0 + i,
            customer_id=customer,
            device_id=device,
            ip="203.0.113.9",
            method=":" * 256,
            reason=":" * 256,
        )
        out += engine.process(e, i, 0, T0 + i)
    keys = [s.dedup_key for s in out]
    whole = ("\x1e:" * 256 + ":") * 2 + "dev_A"
    assert keys[0] == whole[:929] + "sha256:" + hashlib.sha256(whole.encode()).hexdigest()
    assert len(keys[0]) == 1_000
    assert keys[0] != keys[1]
    assert keys[0] == keys[2]
    with pytest.raises(RulePackError, match="dedup may not hold U\\+001E or U\\+001F"):
        load_pack(
            'version: "t1"\nrules: [{id: r, on: [login.failed], when: "true", severity: low, '
            'audience: fraud, title: t, dedup: "{data.method}\\x1e{data.reason}"}]'
        )


SHARED_KEY_NOTICE = """
version: "t1"
patterns:
  - id: login_then_contact_change
    kind: sequence
    by: {by}
    within: 1h
    steps:
      - {{name: login, on: [login.succeeded]}}
      - {{name: change, on: [contact.changed]}}
    severity: info
    audience: {audience}
    title: "Contact details changed after a login from {{login.data.device_id}} at {{login.occurred_at}}"
    dedup: "{{event_id}}"
"""


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_pattern_told_to_a_customer_is_keyed_by_the_customer(kind: str) -> None:
    """A review's leftover: a customer-audience pattern keyed by a key customers share (an IP, a
    source) took its steps from any of them, and told the customer of the last one the others'
    events (here another customer's device and login time, in a title). New packs are refused
    it; a stored one still loads, so a restart is never refused."""
    from tests.helpers.differential import engine_factory

    for by in ("data.ip", "source", "[data.ip, data.device_id]"):
        with pytest.raises(RulePackError, match="keyed by customer_id"):
            load_pack(SHARED_KEY_NOTICE.format(by=by, audience="customer"))
    load_pack(SHARED_KEY_NOTICE.format(by="data.ip", audience="fraud"))  # an analyst's may be keyed so
    load_pack(SHARED_KEY_NOTICE.format(by="[customer_id, data.ip]", audience="customer"))
    stored = load_pack(SHARED_KEY_NOTICE.format(by="data.ip", audience="customer"), stored=True)
    engine = engine_factory(kind)(stored)
    login = ev("login.succeeded", at=T0, customer_id="cus_a", ip="203.0.113.9", device_id="dev_of_a")
    change = ev("contact.changed", at=T0 + 60, customer_id="cus_b", ip="203.0.113.9")
    out = engine.process(login, 0, 0, T0) + engine.process(change, 1, 0, T0 + 60)
    (told,) = out  # what the stored pack does, and what new packs may no longer ask for
    assert (told.customer_id, "dev_of_a" in told.title) == ("cus_b", True)


JOINED_KEY_PACK = """
version: "t1"
features:
  - {name: logins_here, on: [login.succeeded], agg: count, window: 1h, by: [data.device_id, customer_id, data.method]}
patterns:
  - id: failed_then_succeeded
    kind: sequence
    by: [data.device_id, customer_id, data.method]
    within: 1h
    steps:
      - {name: failed, on: [login.failed]}
      - {name: succeeded, on: [login.succeeded]}
    severity: info
    audience: customer
    title: "A sign-in after a failed one at {failed.occurred_at}"
rules:
  - {id: counted, on: [login.succeeded], when: "true", severity: info, audience: ops, title: "{logins_here}"}
"""


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_key_of_several_parts_is_one_tuple_of_values_only(kind: str) -> None:
    """A hostile test: a key's parts were joined by U+001F, which data strings may hold, so
    cus_a's sign-in from ("d", "z\x1fcus_b\x1fw") and cus_b's from ("d\x1fcus_a\x1fz", "w") were
    one key: a pattern told to cus_b completed on cus_a's failed sign-in, and both counted in
    one feature. A part's separator and escape are escaped now (both engines); keys of parts
    without them are what they were."""
    from tests.helpers.differential import engine_factory

    engine = engine_factory(kind)(load_pack(JOINED_KEY_PACK))
    sent = [
        ("login.failed", "cus_a", "d", "z\x1fcus_b\x1fw"),
        ("login.succeeded", "cus_b", "d\x1fcus_a\x1fz", "w"),  # one key with cus_a's before
        ("login.succeeded", "cus_a", "d", "z\x1fcus_b\x1fw"),
        ("login.succeeded", "cus_a", "d", "z\x1e1cus_b\x1e1w"),  # what the escaped part spells
        ("login.failed", "cus_a", "e", "x"),
        ("login.succeeded", "cus_a", "e", "x"),
    ]
    out = []
    for i, (type_, customer, device, method) in enumerate(sent):
        e = ev(type_, at=T0 + i, customer_id=customer, device_id=device, ip="203.0.113.9", method=method)
        out += engine.process(e, i, 0, T0 + i)
    assert [s.title for s in out if s.rule_id == "counted"] == ["1", "1", "1", "1"]
    told = [s.customer_id for s in out if s.rule_id == "failed_then_succeeded"]
    assert told == ["cus_a", "cus_a"]  # its own failed sign-in and success only, twice


SHARED_FEATURE_NOTICE = """
version: "t1"
features:
  - {{name: last_device_here, on: [login.succeeded], agg: last, of: data.device_id, by: {by}}}
rules:
  - id: contact_changed
    on: [contact.changed]
    when: "true"
    severity: info
    audience: {audience}
    title: "Contact details changed; the last device seen here was {{last_device_here}}"
"""


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_detection_told_to_a_customer_quotes_only_what_is_keyed_by_the_customer(kind: str) -> None:
    """A review found the same leak through a feature: a customer's rule quoting one keyed by an
    IP told the customer the device another customer had just used there."""
    from tests.helpers.differential import engine_factory

    with pytest.raises(RulePackError, match="last_device_here is keyed by what customers share"):
        load_pack(SHARED_FEATURE_NOTICE.format(by="data.ip", audience="customer"))
    scored = SHARED_FEATURE_NOTICE.format(by="data.ip", audience="customer").replace(
        "rules:",
        "anomaly:\n  - {name: ip_odd, kind: robust_zscore, of: len(last_device_here), by: customer_id}\n"
        "lists:\n  mules: [IBAN_OF_MULE_1]\nrules:",
    )
    for quoting in ("{ip_odd}", "{lists.mules}"):  # a score of a shared feature moves with others'; a list
        with pytest.raises(RulePackError, match=f"{quoting[1:-1]} is keyed by what customers share"):
            load_pack(scored.replace("{last_device_here}", quoting))
    load_pack(SHARED_FEATURE_NOTICE.format(by="data.ip", audience="security"))
    load_pack(SHARED_FEATURE_NOTICE.format(by="[customer_id, data.ip]", audience="customer"))
    stored = load_pack(SHARED_FEATURE_NOTICE.format(by="data.ip", audience="customer"), stored=True)
    engine = engine_factory(kind)(stored)
    login = ev("login.succeeded", at=T0, customer_id="cus_a", ip="203.0.113.9", device_id="dev_of_a")
    change = ev("contact.changed", at=T0 + 60, customer_id="cus_b", ip="203.0.113.9")
    (told,) = engine.process(login, 0, 0, T0) + engine.process(change, 1, 0, T0 + 60)
    assert (told.customer_id, told.title.rsplit(" ", 1)[-1]) == ("cus_b", "dev_of_a")  # the stored pack's


LIFETIME_DISTINCT_PACK = load_pack("""
version: "t1"
features:
  - name: devices_ever
    on: [login.succeeded]
    by: customer_id
    agg: distinct_count
    of: data.device_id
rules:
  - id: many_devices
    on: [login.succeeded]
    when: devices_ever >= 3
    severity: low
    audience: security
    title: "{devices_ever} devices"
""")


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_lifetime_distinct_count_keeps_its_newest_thousand_values_as_a_windowed_one(kind: str) -> None:
    """A hostile test: a distinct count without a window was never pruned (the pack's budget
    counted it at 1,000): one customer's 100,000 devices made its state 11 MB, logged whole by
    each batch, 100 MB/s of changelog. It keeps the newest 1,000 values, as a windowed one."""
    from tests.helpers.differential import engine_factory

    engine = engine_factory(kind)(LIFETIME_DISTINCT_PACK)
    for i in range(1_050):
        engine.process(ev("login.succeeded", at=T0 + i, customer_id="c1", device_id=f"dev_{i}"), i, 0, T0 + i)
    assert engine.features_of({"customer_id": "c1"}, T0 + 1_050)["devices_ever"] == 1_000
    out = engine.process(
        ev("login.succeeded", at=T0 + 2_000, customer_id="c1", device_id="dev_0"), 1_050, 0, T0 + 2_000
    )
    assert [s.title for s in out] == ["1000 devices"]  # dev_0 was the oldest: dropped, and counted again


LONG_VALUES_PACK = load_pack("""
version: "t1"
types: [app.opened]
features:
  - name: agents_24h
    on: [app.opened]
    by: customer_id
    agg: distinct_count
    of: data.agent
    window: 24h
rules:
  - id: many_agents
    on: [app.opened]
    when: agents_24h >= 3
    severity: low
    audience: security
    title: "{agents_24h} agents"
""")


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_distinct_count_keeps_a_long_value_by_its_digest_so_its_state_stays_small(kind: str) -> None:
    """A hostile test: a distinct count over a free-form field kept each value whole, so a
    producer's 1,000 values of 60 KB made a 60 MB state row, rewritten by each event. A value
    past 256 characters is kept by its SHA-256, in both engines; counts are unchanged."""
    from tests.helpers.differential import engine_factory, every_state_row

    engine = engine_factory(kind)(LONG_VALUES_PACK)
    long_values = [f"{i:04d}" + "é" * 8_000 for i in range(100)]  # 16 KB each as UTF-8
    near = ["x" * 256, "x" * 257, "x" * 256 + "y"]  # at the bound: kept; past it: digests, still distinct
    for i, agent in enumerate([*long_values, *near, long_values[0], near[0]]):
        raw = json.dumps(event("app.opened", at=T0 + i, customer_id="c1", agent=agent)).encode()
        engine.process(validate_event(raw, T0 + i, custom_types=("app.opened",)), i, 0, T0 + i)
    assert engine.features_of({"customer_id": "c1"}, T0 + 200)["agents_24h"] == 103
    (row,) = [state for (name, _), state in every_state_row(engine).items() if name.startswith("agents_24h#")]
    assert row is not None
    assert len(row) < 20_000  # 103 values: 1.6 MB as they came
    assert b"x" * 256 in row


STEP_ID_PACK = load_pack("""
version: "t1"
patterns:
  - id: payee_then_transfer
    kind: sequence
    by: customer_id
    within: 30m
    steps:
      - {name: payee, on: [payee.added]}
      - {name: transfer, on: [transfer.initiated]}
    severity: high
    audience: fraud
    title: "payee {payee.data.payee_id} paid"
    dedup: "{payee.event_id}"
""")


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_pattern_keyed_by_a_steps_event_id_is_keyed_by_its_source_too(kind: str) -> None:
    """On a review: a step's event id (``{payee.event_id}``) was left alone, so two producers'
    ``p-1`` completed into one alert for two customers."""
    from tests.helpers.differential import engine_factory

    engine = engine_factory(kind)(STEP_ID_PACK)
    out = []
    for i, (source, customer) in enumerate((("web", "cus_a"), ("mobile", "cus_b"))):
        added = ev("payee.added", at=T0 + i, customer_id=customer, source=source, event_id="p-1")
        paid = ev("transfer.initiated", at=T0 + 10 + i, customer_id=customer, source=source)
        out += engine.process(added, 2 * i, 0, T0 + i) + engine.process(paid, 2 * i + 1, 0, T0 + 10 + i)
    assert sorted(s.dedup_key for s in out) == ["mobile\x1fp-1", "web\x1fp-1"]


ABSENCE_PACK = load_pack("""
version: "t1"
patterns:
  - id: change_without_login
    kind: absence
    by: customer_id
    within: 1h
    after: {name: change, on: [contact.changed]}
    expect: {on: [login.succeeded]}
    severity: high
    audience: security
    title: "no login after a contact change"
""")


@pytest.mark.parametrize("kind", ["python", "native"])
def test_an_absence_keeps_one_timer_a_key_however_often_it_is_armed_and_met(kind: str) -> None:
    """A hostile test: a key's after and expect, alternating, added a timer entry a cycle (the
    met deadline's entry stayed until it came due, up to ``within`` later): 100,000 entries for
    one key. A key keeps one entry; the detection still fires when a deadline passes."""
    from tests.helpers.differential import engine_factory

    engine = engine_factory(kind)(ABSENCE_PACK)
    offset = 0
    for _ in range(2_000):
        for type_ in ("contact.changed", "login.succeeded"):
            engine.process(ev(type_, at=T0 + offset, customer_id="c1"), offset, 0, T0 + offset)
            offset += 1
    assert len(engine.timers) <= 2
    engine.process(ev("contact.changed", at=T0 + offset, customer_id="c1"), offset, 0, T0 + offset)
    fired = engine.advance(T0 + offset + 3_601)
    assert [s.rule_id for s in fired] == ["change_without_login"]
    assert len(engine.timers) == 0


def test_deadlines_armed_each_earlier_than_the_last_keep_the_timers_compact() -> None:
    """On a review: a deadline earlier than the key's queued one is pushed (it must come due
    first), so event times running back within the lateness pushed one a cycle. Past twice the
    keys and some slack, the timers keep each key's earliest entry only."""
    from ringfence.engine.patterns import TIMER_SLACK, Timers

    timers = Timers()
    for i in range(5_000):
        timers.add(1e6 - i, "p", "k")
    assert len(timers) <= 2 + TIMER_SLACK + 1
    assert timers.pop_due(float("inf")) == (1e6 - 4_999, "p", "k")
