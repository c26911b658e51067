"""Sequence and absence patterns, their timeouts, and timers firing on the watermark."""

from __future__ import annotations

from typing import Any

import pytest

from ringfence.engine import Engine, load_pack
from ringfence.engine.rules import AlertSignal
from ringfence.errors import RulePackError
from tests.helpers.differential import engine_factory
from tests.helpers.factories import T0, ev

PACK = load_pack("""
version: p1
patterns:
  - id: reset_payee_transfer
    kind: sequence
    by: customer_id
    within: 30m
    steps:
      - {name: reset, on: [password.reset]}
      - {name: payee, on: [payee.added]}
      - name: transfer
        on: [transfer.initiated]
        when: data.payee_id == payee.data.payee_id and data.amount >= 100
    severity: critical
    audience: fraud
    title: "reset {reset.event_id}, payee {payee.data.payee_id}, sent {data.amount}"
  - id: contact_without_login
    kind: absence
    by: customer_id
    within: 10m
    after: {name: change, on: [contact.changed]}
    expect: {on: [login.succeeded], when: data.device_id == "dev_home"}
    severity: medium
    audience: security
    title: "no login after contact change {change.event_id}"
  - id: source_silent
    kind: absence
    by: source
    within: 5m
    expect: {on: [api.request]}
    severity: high
    audience: ops
    title: "{source} silent"
    dedup: "{source}"
""")


def run(engine: Engine, events: list[Any]) -> list[AlertSignal]:
    out: list[AlertSignal] = []
    for i, e in enumerate(events):
        out += engine.process(e, i, 0, 0.0)
    return out


def seq(
    t_reset: float,
    t_payee: float,
    t_transfer: float,
    *,
    payee: str = "pay_9",
    sent_to: str = "pay_9",
    amount: str = "150.00",
) -> list[Any]:
    return [
        ev("password.reset", at=T0 + t_reset),
        ev("payee.added", at=T0 + t_payee, payee_id=payee, payee_country="GB"),
        ev("transfer.initiated", at=T0 + t_transfer, payee_id=sent_to, amount=amount),
    ]


@pytest.mark.parametrize(
    ("events", "fires"),
    [
        (seq(0, 60, 120), True),
        (seq(0, 60, 1800), True),  # the bound is inclusive
        (seq(0, 60, 1801), False),  # too slow: the partial match timed out
        (seq(0, 60, 120, sent_to="pay_other"), False),  # a later step refers to an earlier one
        (seq(0, 60, 120, amount="50.00"), False),
        ([*seq(0, 60, 120)[1:], seq(0, 60, 120)[0]], False),  # out of order steps
    ],
)
def test_sequence(events: list[Any], fires: bool) -> None:
    hits = [s for s in run(Engine(PACK), events) if s.rule_id == "reset_payee_transfer"]
    assert bool(hits) is fires


def fired_by(kind: str, events: list[Any]) -> list[AlertSignal]:
    engine = engine_factory(kind)(PACK)
    return [s for s in run(engine, events) if s.rule_id == "reset_payee_transfer"]


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_decoy_step_does_not_use_up_a_sequence(kind: str) -> None:
    """Reset, a decoy payee, the payee paid, the transfer: the match is still there (an
    attacker in the session could always add a payee first)."""
    reset, decoy, _ = seq(0, 60, 120, payee="pay_decoy")
    events = [reset, decoy, *seq(0, 90, 150)[1:]]
    (signal,) = fired_by(kind, events)
    assert [e["event_id"] for e in signal.related_events] == [reset.event_id, events[2].event_id]
    assert fired_by(
        kind, [reset, *[seq(0, 60 + i, 120, payee=f"pay_d{i}")[1] for i in range(14)], *seq(0, 90, 150)[1:]]
    )


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_flood_of_decoys_does_not_push_out_the_step_they_branch_from(kind: str) -> None:
    """Past 16 partials, the oldest of the most crowded step goes: 40 decoy payees after the
    reset push out decoys, never the reset itself (before, the oldest partial went whatever
    its step, the reset first, and the payee paid after them matched nothing)."""
    reset = seq(0, 0, 0)[0]
    decoys = [seq(0, 1 + i, 0, payee=f"pay_d{i}")[1] for i in range(40)]
    (signal,) = fired_by(kind, [reset, *decoys, *seq(0, 90, 150)[1:]])
    assert signal.related_events[0]["event_id"] == reset.event_id
    resets = [ev("password.reset", at=T0 + i) for i in range(40)]  # a flood of the first step alone
    assert len(fired_by(kind, [*resets, *seq(0, 90, 150)[1:]])) == 1


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_late_event_neither_ends_nor_advances_a_sequence(kind: str) -> None:
    reset, payee, transfer = seq(0, 60, 120)
    late = ev("transfer.initiated", at=T0 - 60, payee_id="pay_9", amount="1.00")  # from before the reset
    assert len(fired_by(kind, [reset, payee, late, transfer])) == 1
    early = ev("payee.added", at=T0 - 30, payee_id="pay_9", payee_country="GB")  # before the reset: no step of it
    assert fired_by(kind, [reset, early, transfer]) == []


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_producer_clock_ahead_does_not_reorder_a_sequences_steps(kind: str) -> None:
    """The reset from a producer 290 s ahead, the payee and the transfer from another, 30 s
    and 60 s after it arrived: the steps are in the order they arrived (before, the reset's
    time was its clock's, and the other two, before it, took no step of it)."""
    engine = engine_factory(kind)(PACK)
    reset, payee, transfer = seq(290, 30, 60)
    out = engine.process(reset, 1, 0, T0) + engine.process(payee, 2, 0, T0 + 30)
    out += engine.process(transfer, 3, 0, T0 + 60)
    assert [s.rule_id for s in out] == ["reset_payee_transfer"]


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_heartbeat_is_due_from_when_its_event_arrived_not_its_clock(kind: str) -> None:
    """A source's event dated 290 s ahead arms its 5-minute heartbeat from its arrival, and
    the on-time events after it re-arm it (before, its deadline was 290 s later, and the events
    after it, older than it, were no news): the source silent after T0 + 60 is due at T0 + 360."""
    engine = engine_factory(kind)(PACK)
    engine.process(ev("api.request", at=T0 + 290, source="partner-a"), 1, 0, T0)
    engine.process(ev("api.request", at=T0 + 60, source="partner-a"), 2, 0, T0 + 60)
    other = [ev("api.request", at=T0 + t, source="partner-b") for t in (300, 370)]
    assert engine.process(other[0], 3, 0, T0 + 300) == []
    (signal,) = engine.process(other[1], 4, 0, T0 + 370)
    assert (signal.rule_id, signal.title, signal.occurred_at) == ("source_silent", "partner-a silent", T0 + 360)


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_sequence_completes_once_for_its_steps(kind: str) -> None:
    events = seq(0, 60, 120)
    again = ev("transfer.initiated", at=T0 + 130, payee_id="pay_9", amount="150.00")
    assert len(fired_by(kind, [*events, again])) == 1  # the payee's partial was used up by the first


def test_a_sequence_signal_carries_every_step_as_evidence() -> None:
    events = seq(0, 60, 120)
    (signal,) = [s for s in run(Engine(PACK), events) if s.rule_id == "reset_payee_transfer"]
    assert signal.title == f"reset {events[0].event_id}, payee pay_9, sent 150"
    assert [e["event_id"] for e in signal.related_events] == [events[0].event_id, events[1].event_id]
    assert signal.event_id == events[2].event_id


def test_sequences_are_per_key() -> None:
    events = [
        ev("password.reset", at=T0, customer_id="a"),
        ev("payee.added", at=T0 + 1, customer_id="b", payee_id="pay_9", payee_country="GB"),
        ev("transfer.initiated", at=T0 + 2, customer_id="b", payee_id="pay_9"),
    ]
    assert run(Engine(PACK), events) == []


def test_absence_fires_when_the_watermark_passes_the_deadline() -> None:
    engine = Engine(PACK, allowed_lateness_s=5)
    change = ev("contact.changed", at=T0)
    assert run(engine, [change, ev("card.authorization", at=T0 + 600)]) == []  # deadline not yet behind watermark
    (signal,) = [
        s for s in run(engine, [ev("card.authorization", at=T0 + 606)]) if s.rule_id == "contact_without_login"
    ]
    assert signal.title == f"no login after contact change {change.event_id}"
    assert signal.occurred_at == T0 + 600  # the absence happened at its deadline
    assert signal.event_id == change.event_id


def test_the_expected_event_in_time_cancels_the_absence() -> None:
    engine = Engine(PACK)
    events = [
        ev("contact.changed", at=T0),
        ev("login.succeeded", at=T0 + 300, device_id="dev_home"),
        ev("card.authorization", at=T0 + 3600),
    ]
    assert [s for s in run(engine, events) if s.rule_id == "contact_without_login"] == []


def test_an_expected_event_that_fails_its_condition_does_not_cancel() -> None:
    engine = Engine(PACK)
    events = [
        ev("contact.changed", at=T0),
        ev("login.succeeded", at=T0 + 300, device_id="dev_new"),
        ev("card.authorization", at=T0 + 3600),
    ]
    assert len([s for s in run(engine, events) if s.rule_id == "contact_without_login"]) == 1


def test_a_heartbeat_fires_once_per_quiet_period_and_rearms() -> None:
    engine = Engine(PACK)
    api = [ev("api.request", at=T0 + t, customer_id=None, source="gw") for t in (0, 60, 120)]
    later = [
        ev("api.request", at=T0 + 1000, customer_id=None, source="other"),
        ev("api.request", at=T0 + 1001, customer_id=None, source="gw"),
        ev("api.request", at=T0 + 2000, customer_id=None, source="other"),
    ]
    hits = [s for s in run(engine, api + later) if s.rule_id == "source_silent"]
    assert [(s.dedup_key, s.occurred_at) for s in hits] == [("gw", T0 + 420), ("other", T0 + 1300), ("gw", T0 + 1301)]


def test_a_busy_key_keeps_one_timer_and_still_fires_after_its_last_event() -> None:
    engine = Engine(PACK)
    busy = [ev("api.request", at=T0 + t, customer_id=None, source="gw") for t in range(0, 3000, 2)]
    assert [s for s in run(engine, busy) if s.rule_id == "source_silent"] == []  # never quiet for 5 minutes
    assert len(engine.timers) <= 2  # not one entry per event: memory stays bounded per key
    hits = [s for s in engine.advance(T0 + 2998 + 301) if s.rule_id == "source_silent"]
    assert [(s.dedup_key, s.occurred_at) for s in hits] == [("gw", T0 + 2998 + 300)]


def test_a_late_event_neither_moves_a_heartbeat_earlier_nor_rearms_it() -> None:
    engine = Engine(PACK)
    last_heard = ev("api.request", at=T0 + 100, customer_id=None, source="gw")
    run(engine, [last_heard])  # deadline T0+400
    run(engine, [ev("api.request", at=T0 + 50, customer_id=None, source="gw")])  # late: the source spoke since
    assert engine.advance(T0 + 360) == []
    hits = [s for s in engine.advance(T0 + 401) if s.rule_id == "source_silent"]
    assert [(s.occurred_at, s.event_id) for s in hits] == [(T0 + 400, last_heard.event_id)]
    run(engine, [ev("api.request", at=T0 + 90, customer_id=None, source="gw")])  # later still, but older
    assert engine.advance(T0 + 10_000) == []  # fired once


def test_only_an_absence_without_after_is_a_heartbeat() -> None:
    """Runtimes merge copies of a heartbeat's state by keeping the latest deadline."""
    engine = Engine(PACK)
    names = engine.persisted_names
    assert engine.is_heartbeat(names["pattern:source_silent"])
    assert not engine.is_heartbeat(names["pattern:contact_without_login"])
    assert not engine.is_heartbeat(names["pattern:reset_payee_transfer"])
    assert not engine.is_heartbeat("pattern:unknown#0")


def test_timers_fire_on_an_explicit_watermark_when_no_event_comes() -> None:
    engine = Engine(PACK)
    run(engine, [ev("contact.changed", at=T0)])
    assert engine.advance(T0 + 599) == []
    assert [s.rule_id for s in engine.advance(T0 + 601)] == ["contact_without_login"]
    assert engine.advance(T0 + 10_000) == []  # fired once


def test_pattern_state_and_timers_survive_a_restore() -> None:
    first = Engine(PACK)
    run(first, [*seq(0, 60, 61)[:2], ev("contact.changed", at=T0 + 70)])
    rows = [(n, k, s) for n, k, s in first.take_changes() if s is not None]
    second = Engine(PACK)
    second.restore(rows, dict(first.max_event_time))
    hits = run(second, [ev("transfer.initiated", at=T0 + 120, payee_id="pay_9", amount="150.00")])
    assert [s.rule_id for s in hits] == ["reset_payee_transfer"]
    assert [s.rule_id for s in second.advance(T0 + 700)] == ["contact_without_login"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "when: data.payee_id == payee.data.payee_id and data.amount >= 100",
            "when: data.payee_id == transfer.data.payee_id",
        ),
        ("within: 30m", "within: forever"),
        ("kind: sequence", "kind: sometimes"),
    ],
)
def test_broken_patterns_are_load_errors(change: str, message: str) -> None:
    with pytest.raises(RulePackError, match=r"patterns\[0\] \(reset_payee_transfer\)"):
        load_pack(PACK.text.replace(change, message))


@pytest.mark.parametrize("kind", ["python", "native"])
def test_an_event_dated_ahead_moves_event_time_no_further_than_its_arrival(kind: str) -> None:
    """A producer may date events minutes ahead (clock skew; the validator allows 5 minutes):
    one such, from one source, must not run the partition's event time on for every other key,
    firing their absence timers early (a false "source silent" for another bank's partner) and
    judging their events late. Event time moves to when an event arrived, at most."""
    from tests.helpers.differential import engine_factory

    engine = engine_factory(kind)(PACK)
    quiet = ev("api.request", at=T0, source="partner-b")
    ahead = ev("api.request", at=T0 + 299, source="partner-a")  # sent at T0 + 1, dated 5 minutes on
    assert engine.process(quiet, 1, 0, T0) == []
    assert engine.process(ahead, 2, 0, T0 + 1) == []
    assert engine.watermark(0) == T0 + 1 - 5
    on_time = ev("api.request", at=T0 + 2, source="partner-c")
    assert not engine.is_late(on_time, 0)
    assert engine.process(on_time, 3, 0, T0 + 2) == []  # partner-b's 5 minutes are not over

    later = ev("api.request", at=T0 + 306, source="partner-c")  # partner-b really is silent now
    assert [s.rule_id for s in engine.process(later, 4, 0, T0 + 306)] == ["source_silent"]


@pytest.mark.parametrize("kind", ["python", "native"])
def test_an_event_of_unknown_arrival_moves_event_time_to_when_it_happened(kind: str) -> None:
    from tests.helpers.differential import engine_factory

    engine = engine_factory(kind)(PACK)
    engine.process(ev("api.request", at=T0 + 299, source="partner-a"), 1, 0, 0.0)
    assert engine.watermark(0) == T0 + 299 - 5


SKEW_PACK = load_pack("""
version: s1
features:
  - name: endpoint_requests_5m
    by: data.endpoint
    agg: count
    window: 5m
    on: [api.request]
rules:
  - id: busy_endpoint
    on: [api.request]
    when: endpoint_requests_5m >= 50
    severity: low
    audience: ops
    title: "{data.endpoint} busy"
    dedup: "{data.endpoint}"
""")


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_producer_clock_ahead_does_not_shrink_a_shared_keys_window_for_the_others(kind: str) -> None:
    """One gateway's clock 290 s ahead (the validator allows 300): an endpoint's window must
    still hold the other gateway's last five minutes, as its events read it."""
    engine = engine_factory(kind)(SKEW_PACK)
    data = {"service": "payments", "endpoint": "/pay", "status": 200, "latency_ms": 5}
    hits = 0
    for i in range(70):  # every 5 s for almost 6 minutes, both gateways
        now = T0 + 5.0 * i
        ahead = ev("api.request", at=now + 290, customer_id=None, source="gw2", **data)
        honest = ev("api.request", at=now, customer_id=None, source="gw1", **data)
        engine.process(ahead, 2 * i, 0, now)
        hits += sum(s.rule_id == "busy_endpoint" for s in engine.process(honest, 2 * i + 1, 0, now))
    assert hits > 0  # both gateways fill the window past 50: the ahead ones count as of their arrival


DEVICE_PACK = load_pack("""
version: d1
features:
  - {name: device_last_country, by: data.device_id, agg: last, of: data.geo.country, on: [login.succeeded]}
  - {name: device_since, by: data.device_id, agg: time_since, window: 1h, on: [login.succeeded]}
  - {name: device_customers_10m, by: data.device_id, agg: distinct_count, of: customer_id, window: 10m,
     on: [login.succeeded]}
  - {name: device_logins_1m, by: data.device_id, agg: count, window: 1m, on: [login.succeeded]}
rules:
  - id: seen
    on: [login.succeeded]
    when: "true"
    severity: low
    audience: security
    title: "{device_last_country} {device_since} {device_customers_10m} {device_logins_1m}"
    dedup: "{event_id}"
""")


@pytest.mark.parametrize("kind", ["python", "native"])
def test_a_producer_clock_ahead_keeps_no_shared_key_state_from_the_others(kind: str) -> None:
    """A shared device's state as other producers' events read it, when one producer's clock
    runs 290 s ahead: its login counts, and is the device's last, as of when it arrived (before,
    the last country stayed its own for 290 s, the time since was negative or none, and its
    customer and login sat outside every honest reader's window)."""
    engine = engine_factory(kind)(DEVICE_PACK)

    def login(customer: str, country: str, at: float, arrived: float) -> str:
        e = ev(
            "login.succeeded",
            at=at,
            customer_id=customer,
            device_id="dev_shared",
            geo={"lat": 0, "lon": 0, "country": country},
        )
        (signal,) = engine.process(e, int(arrived), 0, arrived)
        return signal.title

    assert login("c1", "FR", T0, T0) == "  1 1"
    assert login("c2", "RU", T0 + 290, T0 + 1) == "FR 1 2 2"  # it too reads as of its arrival
    assert login("c3", "GB", T0 + 2, T0 + 2) == "RU 1 3 3"
    assert login("c4", "GB", T0 + 3, T0 + 3) == "GB 1 4 4"
