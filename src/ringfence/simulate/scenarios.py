"""Injected scenarios, one per default detection: the events, and the label saying which
detections must fire (``expected``) and which may also fire on them (``also``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ringfence.simulate.population import (
    FAR,
    GAMBLING_MCC,
    HIGH_RISK,
    HOME,
    PARTNER_FEEDS,
    Customer,
    Label,
    Population,
)

Events = list[dict[str, Any]]
Builder = Callable[[Population, Customer, float], tuple[Events, tuple[str, ...]]]
FEED_PAUSE_S = 420.0  # how long ops_source_silent stops a partner feed: past the pack's 5 minutes


def _foreign(people: Population, c: Customer, n: int = 1) -> list[str]:
    return people.rng.sample([k for k in HOME if k != c.country], n)


def card_velocity(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    return [people.card(c, t + i * 20, people.rng.uniform(5, 60)) for i in range(9)], ()


def card_testing(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    events = [people.card(c, t + i * 8, people.rng.uniform(0.5, 2.0), approved=False, channel="ecom") for i in range(4)]
    return [*events, people.card(c, t + 40, 1.0, channel="ecom")], ()


def card_amount_anomaly(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    history = [
        people.card(c, t + i * 300, c.typical_amount * people.rng.uniform(0.8, 1.25), channel="ecom") for i in range(10)
    ]
    spike = min(1900.0, max(320.0, c.typical_amount * 30))
    return [*history, people.card(c, t + 3100, spike, channel="ecom")], ()


def card_impossible_travel(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    far = people.rng.choice(list(FAR))
    return [people.card(c, t, 30.0, channel="pos"), people.card(c, t + 900, 45.0, channel="pos", country=far)], (
        "notify_card_abroad",
    )


def card_high_risk_country(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    return [people.card(c, t, 120.0, channel="ecom", country=people.rng.choice(HIGH_RISK))], ("notify_card_abroad",)


def card_new_gambling(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    return [people.card(c, t, 500.0, channel="ecom", mcc=GAMBLING_MCC)], ()


def card_multiple_countries(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    countries = _foreign(people, c, 3)
    return [people.card(c, t + i * 600, 40.0, channel="ecom", country=k) for i, k in enumerate(countries)], (
        "notify_card_abroad",
    )


def card_atm_cashout(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """Cards of several customers (cloned) emptied at one ATM in their home country."""
    atm = f"atm_{people.rng.getrandbits(32):08x}"
    locals_ = [p for p in people.active if p.country == c.country] or [c]
    crew = people.rng.sample(locals_, min(6, len(locals_)))
    withdrawals = []
    for i, victim in enumerate(crew):
        cash = people.card(victim, t + i * 80, people.rng.choice([500.0, 600.0, 800.0, 1000.0]), channel="atm")
        cash["data"]["merchant"] = {"id": atm, "mcc": "6011", "country": c.country}
        withdrawals.append(cash)
    return withdrawals, ()


def transfer_amount_anomaly(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A customer's everyday transfers, then a new payee sent many times more."""
    usual = people.rng.uniform(40, 250)
    history = [people.transfer(c, t + i * 240, usual * people.rng.uniform(0.8, 1.25)) for i in range(9)]
    payee = f"pay_s{people.rng.getrandbits(32):08x}"
    added = people.event("payee.added", t + 2400, c, "web", {"payee_id": payee, "payee_country": c.country})
    spike = people.transfer(c, t + 3000, max(1200.0, usual * 40) + 0.37, payee=payee)
    return [*history, added, spike], ("notify_large_transaction",)


def login_failed_burst(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    ip = f"203.0.113.{people.rng.randrange(1, 255)}"
    return [people.login(c, t + i * 10, ok=False, ip=ip) for i in range(6)], ()


def ato_burst_then_new_device(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    ip, device = f"203.0.113.{people.rng.randrange(1, 255)}", f"dev_x{people.rng.getrandbits(40):010x}"
    failed = [people.login(c, t + i * 10, ok=False, ip=ip, device=device) for i in range(6)]
    return [*failed, people.login(c, t + 70, ip=ip, device=device)], ("login_failed_burst",)


def impossible_travel(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    far = people.rng.choice(list(FAR))
    return [people.login(c, t), people.login(c, t + 1800, country=far)], ()


def credential_stuffing_ip(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    ip = f"198.51.100.{people.rng.randrange(1, 255)}"
    victims = people.rng.sample(people.active, 12)
    return [people.login(v, t + i * 3, ok=False, ip=ip) for i, v in enumerate(victims)], ()


def shared_device(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    device = f"dev_s{people.rng.getrandbits(40):010x}"
    victims = people.rng.sample(people.active, 6)
    return [people.login(v, t + i * 200, device=device) for i, v in enumerate(victims)], ()


def aml_structuring_cash(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    return [
        people.event(
            "deposit.received",
            t + i * 1200,
            c,
            "core-banking",
            {"amount": f"{people.rng.uniform(9500, 9990):.2f}", "currency": c.currency, "method": "cash"},
        )
        for i in range(3)
    ], ()


def aml_rapid_in_out(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    deposit = people.event(
        "deposit.received", t, c, "core-banking", {"amount": "8000.00", "currency": c.currency, "method": "transfer"}
    )
    onward = people.transfer(c, t + people.rng.uniform(900, 3000), 7600.0)  # within the hour, or near it
    return [deposit, onward], ("notify_large_transaction",)


def aml_dormant_reactivated(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    return [people.transfer(c, t, 5000.0)], ("notify_large_transaction",)


def aml_round_amount_new_payee(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    payee = f"pay_n{people.rng.getrandbits(32):08x}"
    added = people.event("payee.added", t, c, "web", {"payee_id": payee, "payee_country": c.country})
    return [added, people.transfer(c, t + 1800, 10000.0, payee=payee)], ("notify_large_transaction",)


def aml_mule_fan_in(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """Six customers (victims, or recruited) each add one collector account and pay it."""
    collector = f"pay_m{people.rng.getrandbits(32):08x}"
    events = []
    for i, sender in enumerate(people.rng.sample(people.active, min(6, len(people.active)))):
        at = t + i * 500
        details = {"payee_id": collector, "payee_country": sender.country}
        events.append(people.event("payee.added", at, sender, "web", details))
        events.append(people.transfer(sender, at + 300, people.rng.uniform(150, 900), payee=collector))
    return events, ()


def aml_mule_fan_out(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A customer adds four payees and spreads money over them within the hour."""
    events = []
    for i in range(4):
        payee = f"pay_o{people.rng.getrandbits(32):08x}"
        at = t + i * 700
        events.append(people.event("payee.added", at, c, "web", {"payee_id": payee, "payee_country": c.country}))
        events.append(people.transfer(c, at + 300, people.rng.uniform(600, 1200), payee=payee))
    return events, ("transfer_amount_anomaly",)


def aml_pass_through(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """Two incoming payments (not salary), then most of them sent on to a payee added today."""
    amounts = [people.rng.uniform(1600, 2400) for _ in range(2)]
    deposits = [
        people.event(
            "deposit.received",
            t + i * 600,
            c,
            "core-banking",
            {"amount": f"{a:.2f}", "currency": c.currency, "method": "transfer"},
        )
        for i, a in enumerate(amounts)
    ]
    payee = f"pay_p{people.rng.getrandbits(32):08x}"
    added = people.event("payee.added", t + 1200, c, "web", {"payee_id": payee, "payee_country": c.country})
    onward = people.transfer(c, t + 1800, sum(amounts) * people.rng.uniform(0.92, 0.98), payee=payee)
    return [*deposits, added, onward], ("notify_large_transaction", "transfer_amount_anomaly")


def app_scam_escalation(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A new payee (a fake investment, a romance) paid more each time."""
    payee = f"pay_e{people.rng.getrandbits(32):08x}"
    added = people.event("payee.added", t, c, "web", {"payee_id": payee, "payee_country": c.country})
    first = people.rng.uniform(150, 400)
    amounts = [first, first * people.rng.uniform(2, 3), max(1000.0, first * people.rng.uniform(4, 6))]
    # days apart in real life (the detection allows 14); minutes here, to fit a simulated hour
    at = itertools.accumulate(people.rng.uniform(400, 900) for _ in amounts)
    payments = [people.transfer(c, t + gap, a, payee=payee) for gap, a in zip(at, amounts, strict=True)]
    return [added, *payments], ("transfer_amount_anomaly",)


def transfer_high_risk_country(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    return [
        people.transfer(
            c, t, 1500.0, payee=f"pay_r{people.rng.getrandbits(32):08x}", country=people.rng.choice(HIGH_RISK)
        )
    ], ()


def ato_reset_payee_transfer(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    payee = f"pay_a{people.rng.getrandbits(32):08x}"
    return [
        people.event("password.reset", t, c, "mobile-app", {"channel": "sms"}),
        people.event("payee.added", t + 300, c, "web", {"payee_id": payee, "payee_country": c.country}),
        people.transfer(c, t + 900, 2500.55, payee=payee),
    ], ("notify_large_transaction",)


def ato_contact_change_transfer(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    change = people.event("contact.changed", t, c, "mobile-app", {"channel": "app"})
    return [change, people.transfer(c, t + 600, 1500.0)], ()


def notify_large_transaction(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    return [people.card(c, t, 2500.0, channel="ecom")], ()


def notify_low_balance(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    return [people.event("balance.updated", t, c, "core-banking", {"balance": "20.00", "currency": c.currency})], ()


def notify_card_abroad(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    return [
        people.card(c, t, 25.0, channel="ecom"),
        people.card(c, t + 600, 60.0, channel="ecom", country=_foreign(people, c)[0]),
    ], ()


def notify_salary_received(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    return [
        people.event(
            "deposit.received", t, c, "core-banking", {"amount": "3200.00", "currency": c.currency, "method": "salary"}
        )
    ], ()


# currencies a bank's rate table seldom carries: a payment in one has no reference amount
UNRATED = ("MNT", "LAK", "TJS", "SZL", "MZN", "BTN")


def ops_fx_rate_missing(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    payment = people.card(c, t, people.rng.uniform(20, 90), channel="ecom")
    payment["data"]["currency"] = people.rng.choice(UNRATED)
    payment["data"]["amount"] = f"{people.rng.uniform(5_000, 90_000):.2f}"
    return [payment], ()


def ops_api_error_rate(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    endpoint = f"/partners/{people.rng.getrandbits(24):06x}/sync"
    return [
        people.api(t + i * 3, "partners", endpoint, 503 if i % 2 else 200, people.rng.lognormvariate(3, 0.4))
        for i in range(40)
    ], ()


def ops_api_latency(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    endpoint = f"/reports/{people.rng.getrandbits(24):06x}"
    return [people.api(t + i * 3, "reports", endpoint, 200, people.rng.uniform(1500, 3000)) for i in range(40)], ()


SCENARIOS: dict[str, Builder] = {
    f.__name__: f
    for f in (
        card_velocity,
        card_testing,
        card_amount_anomaly,
        card_impossible_travel,
        card_high_risk_country,
        card_new_gambling,
        card_multiple_countries,
        card_atm_cashout,
        transfer_amount_anomaly,
        login_failed_burst,
        ato_burst_then_new_device,
        impossible_travel,
        credential_stuffing_ip,
        shared_device,
        aml_structuring_cash,
        aml_rapid_in_out,
        aml_dormant_reactivated,
        aml_round_amount_new_payee,
        aml_mule_fan_in,
        aml_mule_fan_out,
        aml_pass_through,
        app_scam_escalation,
        transfer_high_risk_country,
        ato_reset_payee_transfer,
        ato_contact_change_transfer,
        notify_large_transaction,
        notify_low_balance,
        notify_card_abroad,
        notify_salary_received,
        ops_fx_rate_missing,
        ops_api_error_rate,
        ops_api_latency,
    )
}
SCENARIOS["ops_source_silent"] = lambda people, c, t: ([], ())  # built in build(): it pauses a feed
CUSTOMERLESS = frozenset(
    {
        "credential_stuffing_ip",
        "shared_device",
        "ops_api_error_rate",
        "ops_api_latency",
        "ops_source_silent",
        "card_atm_cashout",
        "aml_mule_fan_in",
    }
)


def build(people: Population, name: str, t: float) -> tuple[Label | None, Events]:
    """The events and label of scenario ``name`` starting at ``t`` (None: cannot run now)."""
    if name == "ops_source_silent":
        idle = [f for f in PARTNER_FEEDS if people.paused.get(f, -1.0) < t and f in people.last_feed_event]
        if not idle:
            return None, []
        feed = people.rng.choice(idle)
        people.paused[feed] = t + FEED_PAUSE_S
        # detectable once the source has sent nothing for 5 minutes after its last event
        return Label(name, (name,), (), None, [people.last_feed_event[feed]], t, t + 330.0), []
    if name == "aml_dormant_reactivated":
        if not people.dormant:
            return None, []
        customer = people.dormant.pop()
    else:
        customer = people.rng.choice(people.active)
    events, also = SCENARIOS[name](people, customer, t)
    ids = [e["event_id"] for e in events]
    ends = max(datetime.fromisoformat(e["occurred_at"]).timestamp() for e in events)
    return Label(name, (name,), also, None if name in CUSTOMERLESS else customer.id, ids, t, ends), events
