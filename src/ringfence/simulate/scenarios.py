"""Injected scenarios, one per default detection: the events, and the label saying which
detections must fire (``expected``) and which may also fire on them (``also``).

Each scenario draws its parameters (amounts, counts, gaps, countries, participants) from
ranges written next to it, and the customer's own everyday activity goes on around it
(:func:`build`). The ranges describe the typology (``docs/typologies.md``), not the
detection: where a range reaches past what a detection catches, the report counts the miss.
``TYPOLOGY`` names the typology each scenario belongs to, for the report.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ringfence.simulate.population import (
    FAR,
    GAMBLING_MCCS,
    HIGH_RISK,
    HOME,
    PARTNER_FEEDS,
    Customer,
    Label,
    Population,
    km,
)

Events = list[dict[str, Any]]
Builder = Callable[[Population, Customer, float], tuple[Events, tuple[str, ...]]]
FEED_PAUSE_S = 420.0  # how long ops_source_silent stops a partner feed: past the pack's 5 minutes


def _foreign(people: Population, c: Customer, n: int = 1) -> list[str]:
    return people.rng.sample([k for k in HOME if k != c.country], n)


def _times(people: Population, t: float, n: int, gap: tuple[float, float]) -> list[float]:
    """``n`` moments from ``t``, each a gap drawn from ``gap`` (seconds) after the one before."""
    times = [t]
    for _ in range(n - 1):
        times.append(times[-1] + people.rng.uniform(*gap))
    return times


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["occurred_at"]).timestamp()


def _payee(people: Population, tag: str) -> str:
    return f"pay_{tag}{people.rng.getrandbits(32):08x}"


def _added(people: Population, c: Customer, t: float, payee: str) -> dict[str, Any]:
    return people.payee_added(c, t, payee, people.rng.choice(["web", "mobile-app"]))


# --- card fraud ------------------------------------------------------------------------------


def card_velocity(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A stolen card run through many purchases: 6-20 authorisations, 8-70 s apart."""
    r = people.rng
    at = _times(people, t, r.randint(6, 20), (8, 70))
    return [people.card(c, moment, r.uniform(5, 150)) for moment in at], ()


def card_testing(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A card number tried with tiny online payments, most declined, until one goes through."""
    r = people.rng
    at = _times(people, t, r.randint(3, 12), (2, 45))
    declines = [people.card(c, moment, r.uniform(0.3, 5.0), approved=False, channel="ecom") for moment in at]
    works = people.card(c, at[-1] + r.uniform(5, 120), r.uniform(0.5, 250.0), channel="ecom")
    return [*declines, works], ("card_velocity",)


def card_amount_anomaly(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """The customer's own payments, then one far above them (a stolen card's big purchase)."""
    r = people.rng
    at = _times(people, t, r.randint(8, 16), (120, 600))
    history = [people.card(c, moment, c.typical_amount * r.uniform(0.7, 1.4), channel="ecom") for moment in at]
    spike = max(r.uniform(300, 3000), c.typical_amount * r.uniform(12, 40))
    return [*history, people.card(c, at[-1] + r.uniform(60, 900), spike, channel="ecom")], (
        "notify_large_transaction",
        "card_velocity",
    )


def _too_far(people: Population, c: Customer) -> tuple[str, float]:
    """A country 800 km or more from the customer's, and a time (s) too short to travel there:
    a tenth to four fifths of what an airliner takes."""
    r = people.rng
    far = r.choice([k for k in (*HOME, *FAR) if km(c.country, k) >= 800])
    return far, max(120.0, km(c.country, far) / 900 * r.uniform(0.1, 0.8) * 3600)


def card_impossible_travel(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A card present at home, then (cloned) present far away too soon after."""
    r = people.rng
    far, gap = _too_far(people, c)
    home = people.card(c, t, r.uniform(10, 120), channel=r.choice(["pos", "contactless"]))
    cloned = people.card(c, t + gap, r.uniform(20, 900), channel="pos", country=far)
    return [home, cloned], ("notify_card_abroad", "card_amount_anomaly", "notify_large_transaction")


def card_high_risk_country(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    r = people.rng
    country = r.choice(HIGH_RISK)
    return [people.card(c, t, r.uniform(20, 2500), channel="ecom", country=country)], (
        "notify_card_abroad",
        "card_amount_anomaly",
        "notify_large_transaction",
    )


def card_new_gambling(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A first gambling payment for a significant sum (a takeover's cash-out, or a problem)."""
    r = people.rng
    mcc = r.choice(GAMBLING_MCCS)
    return [people.card(c, t, r.uniform(200, 2500), channel="ecom", mcc=mcc)], (
        "card_amount_anomaly",
        "notify_large_transaction",
    )


def card_multiple_countries(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A card's details used at merchants of three to five countries within the hour."""
    r = people.rng
    countries = _foreign(people, c, r.randint(3, 5))
    at = _times(people, t, len(countries), (60, 800))
    return [
        people.card(c, moment, r.uniform(15, 400), channel="ecom", country=k)
        for moment, k in zip(at, countries, strict=True)
    ], ("notify_card_abroad", "card_amount_anomaly")


ATM_LIMITS = (500.0, 600.0, 700.0, 800.0, 1000.0)  # what banks let a card take out a day


def card_atm_cashout(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """Cards of several customers (cloned) emptied at one ATM in their home country, each to a
    daily limit."""
    r = people.rng
    atm = f"atm_{r.getrandbits(32):08x}"
    locals_ = people.neighbours.get(c.country) or [c]
    crew = r.sample(locals_, min(r.randint(4, 12), len(locals_)))
    withdrawals = []
    for moment, victim in zip(_times(people, t, len(crew), (20, 110)), crew, strict=False):
        cash = people.card(victim, moment, r.choice(ATM_LIMITS), channel="atm")
        cash["data"]["merchant"] = {"id": atm, "mcc": "6011", "country": c.country}
        withdrawals.append(cash)
    return withdrawals, ()


# --- payment fraud and scams -----------------------------------------------------------------


def transfer_amount_anomaly(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A customer's everyday transfers, then a new payee sent many times more (a scam's one
    large payment, an impersonation's "safe account")."""
    r = people.rng
    usual = r.uniform(30, 300)
    at = _times(people, t, r.randint(8, 15), (120, 400))
    history = [people.transfer(c, moment, usual * r.uniform(0.7, 1.4)) for moment in at]
    payee = _payee(people, "s")
    added = _added(people, c, at[-1] + r.uniform(60, 600), payee)
    spike = max(r.uniform(1000, 9000), usual * r.uniform(10, 40)) + 0.37
    sent = people.transfer(c, _at(added) + r.uniform(60, 1800), spike, payee=payee)
    return [*history, added, sent], ("notify_large_transaction", "aml_round_amount_new_payee", "aml_pass_through")


def app_scam_escalation(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A new payee (a fake investment, a romance) paid three to five times, more each time."""
    r = people.rng
    payee = _payee(people, "e")
    added = _added(people, c, t, payee)
    count = r.randint(3, 5)
    first, last = r.uniform(100, 500), r.uniform(1000, 8000)
    step = (last / first) ** (1 / (count - 1))
    amounts = [first * step**i * r.uniform(0.97, 1.03) for i in range(count - 1)] + [last]
    # days apart in real life (the detection allows 14); minutes here, to fit a simulated hour
    at = _times(people, t + r.uniform(120, 900), count, (300, 900))
    payments = [people.transfer(c, moment, a, payee=payee) for moment, a in zip(at, amounts, strict=True)]
    return [added, *payments], ("transfer_amount_anomaly", "notify_large_transaction", "aml_round_amount_new_payee")


# --- account takeover and credential stuffing ------------------------------------------------


def login_failed_burst(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """Someone guessing the customer's password: 5-15 failures, seconds to a minute apart."""
    r = people.rng
    ip = f"203.0.113.{r.randrange(1, 255)}"
    return [people.login(c, moment, ok=False, ip=ip) for moment in _times(people, t, r.randint(5, 15), (3, 60))], ()


def ato_burst_then_new_device(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    r = people.rng
    ip, device = f"203.0.113.{r.randrange(1, 255)}", f"dev_x{r.getrandbits(40):010x}"
    at = _times(people, t, r.randint(5, 12), (3, 30))
    failed = [people.login(c, moment, ok=False, ip=ip, device=device) for moment in at]
    return [*failed, people.login(c, at[-1] + r.uniform(5, 120), ip=ip, device=device)], ("login_failed_burst",)


def impossible_travel(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A login at home, then one from far away (stolen credentials used abroad) too soon."""
    far, gap = _too_far(people, c)
    return [people.login(c, t), people.login(c, t + gap, country=far)], ()


def credential_stuffing_ip(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """Leaked credentials tried against many customers from one address."""
    r = people.rng
    ip = f"198.51.100.{r.randrange(1, 255)}"
    victims = r.sample(people.active, min(r.randint(10, 40), len(people.active)))
    at = _times(people, t, len(victims), (0.5, 12))
    return [people.login(v, moment, ok=False, ip=ip) for moment, v in zip(at, victims, strict=True)], (
        "login_failed_burst",
    )


def shared_device(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """One device (a fraudster's, or a mule herder's) signed in to many customers' accounts."""
    r = people.rng
    device = f"dev_s{r.getrandbits(40):010x}"
    victims = r.sample(people.active, min(r.randint(5, 10), len(people.active)))
    at = _times(people, t, len(victims), (60, 1200))
    return [people.login(v, moment, device=device) for moment, v in zip(at, victims, strict=True)], (
        "impossible_travel",
    )


def ato_reset_payee_transfer(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """Password or second factor reset (a SIM swap's), a new payee, the money sent to it."""
    r = people.rng
    payee = _payee(people, "a")
    reset = r.choice(["password.reset", "mfa.changed"])
    added = _added(people, c, t + r.uniform(60, 600), payee)
    return [
        people.event(reset, t, c, "mobile-app", {"channel": r.choice(["sms", "app", "email"])}),
        added,
        people.transfer(c, _at(added) + r.uniform(60, 900), r.uniform(250, 6000), payee=payee),
    ], ("notify_large_transaction", "transfer_amount_anomaly", "aml_round_amount_new_payee")


def ato_new_device_payee_transfer(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """Credentials and a one-time code phished: the fraudster signs in on their own device (no
    failed logins, no reset), through a proxy in the customer's country, adds a payee and
    sends it money."""
    r = people.rng
    device, ip = f"dev_p{r.getrandbits(40):010x}", f"198.18.{r.randrange(256)}.{r.randrange(1, 255)}"
    at = t + r.uniform(300, 3600)
    events = [people.login(c, t), people.login(c, at, device=device, ip=ip)]  # the customer's own, earlier
    if r.random() < 0.5:  # the app binds the new device
        bound = {"device_id": device, "platform": "android"}
        events.append(people.event("device.registered", at + 20, c, "mobile-app", bound))
    payee = _payee(people, "t")
    added = _added(people, c, at + r.uniform(60, 900), payee)
    sent = people.transfer(c, _at(added) + r.uniform(30, 900), r.uniform(250, 5000), payee=payee)
    return [*events, added, sent], ("notify_large_transaction", "transfer_amount_anomaly", "aml_round_amount_new_payee")


def ato_contact_change_transfer(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    r = people.rng
    change = people.event("contact.changed", t, c, "mobile-app", {"channel": r.choice(["app", "web"])})
    return [change, people.transfer(c, t + r.uniform(120, 3000), r.uniform(1000, 6000))], ("notify_large_transaction",)


# --- money laundering and mules --------------------------------------------------------------


def aml_structuring_cash(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """Cash paid in under the 10,000 reporting threshold, three to six times a day."""
    r = people.rng
    at = _times(people, t, r.randint(3, 6), (600, 5400))  # over a working day
    return [people.deposit(c, moment, r.uniform(8000, 9990), "cash") for moment in at], ()


def aml_rapid_in_out(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A large deposit nearly all sent on within hours."""
    r = people.rng
    amount = r.uniform(5000, 40000)
    deposit = people.deposit(c, t, amount, "transfer")
    onward = people.transfer(c, t + r.uniform(300, 4 * 3600), amount * r.uniform(0.9, 1.0))
    return [deposit, onward], ("notify_large_transaction", "transfer_amount_anomaly")


def aml_dormant_reactivated(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    return [people.transfer(c, t, people.rng.uniform(2000, 20000))], ("notify_large_transaction",)


def aml_round_amount_new_payee(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A new payee sent a large round sum (layering)."""
    r = people.rng
    payee = _payee(people, "n")
    added = _added(people, c, t, payee)
    amount = 1000.0 * r.randint(5, 30)
    return [added, people.transfer(c, t + r.uniform(300, 3 * 3600), amount, payee=payee)], (
        "notify_large_transaction",
        "transfer_amount_anomaly",
    )


def aml_mule_fan_in(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """Four to twelve customers (victims, or recruited) each add one collector account and pay it."""
    r = people.rng
    collector = _payee(people, "m")
    events = []
    senders = r.sample(people.active, min(r.randint(4, 12), len(people.active)))
    for at, sender in zip(_times(people, t, len(senders), (120, 1200)), senders, strict=True):
        events.append(_added(people, sender, at, collector))
        events.append(people.transfer(sender, at + r.uniform(30, 900), r.uniform(100, 2000), payee=collector))
    return events, ("app_scam_escalation", "notify_large_transaction")


def aml_mule_fan_out(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """A customer adds three to seven payees and spreads money over them within hours."""
    r = people.rng
    events = []
    for at in _times(people, t, r.randint(3, 7), (300, 1800)):
        payee = _payee(people, "o")
        events.append(_added(people, c, at, payee))
        events.append(people.transfer(c, at + r.uniform(60, 900), r.uniform(600, 2500), payee=payee))
    return events, ("transfer_amount_anomaly", "notify_large_transaction", "aml_pass_through")


def aml_pass_through(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """Incoming payments (not salary), then most of them sent on to a payee added today."""
    r = people.rng
    total = r.uniform(3000, 20000)
    parts = [r.uniform(1, 3) for _ in range(r.randint(1, 4))]
    amounts = [total * p / sum(parts) for p in parts]
    at = _times(people, t, len(amounts), (300, 2 * 3600))
    deposits = [people.deposit(c, moment, a, "transfer") for moment, a in zip(at, amounts, strict=True)]
    payee = _payee(people, "p")
    added = _added(people, c, at[-1] + r.uniform(60, 1800), payee)
    onward = people.transfer(c, _at(added) + r.uniform(60, 1800), total * r.uniform(0.82, 0.98), payee=payee)
    return [*deposits, added, onward], (
        "notify_large_transaction",
        "transfer_amount_anomaly",
        "aml_rapid_in_out",
        "aml_round_amount_new_payee",
    )


def transfer_high_risk_country(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    r = people.rng
    payee = _payee(people, "r")
    return [people.transfer(c, t, r.uniform(100, 10000), payee=payee, country=r.choice(HIGH_RISK))], (
        "notify_large_transaction",
    )


# --- customer notifications ------------------------------------------------------------------


def notify_large_transaction(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    r = people.rng
    amount = r.uniform(2000, 8000)
    if r.random() < 0.5:
        return [people.card(c, t, amount, channel="ecom")], ("card_amount_anomaly",)
    return [people.transfer(c, t, amount)], ("transfer_amount_anomaly",)


def notify_low_balance(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    balance = {"balance": f"{people.rng.uniform(0, 49.99):.2f}", "currency": c.currency}
    return [people.event("balance.updated", t, c, "core-banking", balance)], ()


def notify_card_abroad(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    r = people.rng
    return [
        people.card(c, t, r.uniform(5, 120), channel="ecom"),
        people.card(c, t + r.uniform(60, 3600), r.uniform(10, 300), channel="ecom", country=_foreign(people, c)[0]),
    ], ()


def notify_salary_received(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    return [people.deposit(c, t, people.rng.lognormvariate(8.0, 0.4), "salary")], ()


# currencies a bank's rate table seldom carries: a payment in one has no reference amount
UNRATED = ("MNT", "LAK", "TJS", "SZL", "MZN", "BTN")


def ops_fx_rate_missing(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    payment = people.card(c, t, people.rng.uniform(20, 90), channel="ecom")
    payment["data"]["currency"] = people.rng.choice(UNRATED)
    payment["data"]["amount"] = f"{people.rng.uniform(5_000, 90_000):.2f}"
    return [payment], ()


# --- operations ------------------------------------------------------------------------------


def ops_api_error_rate(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    """An endpoint failing a third to most of its requests."""
    r = people.rng
    endpoint = f"/partners/{r.getrandbits(24):06x}/sync"
    failing = r.uniform(0.3, 0.8)
    at = _times(people, t, r.randint(25, 60), (1, 6))
    return [
        people.api(moment, "partners", endpoint, 503 if r.random() < failing else 200, r.lognormvariate(3, 0.4))
        for moment in at
    ], ()


def ops_api_latency(people: Population, c: Customer, t: float) -> tuple[Events, tuple[str, ...]]:
    r = people.rng
    endpoint = f"/reports/{r.getrandbits(24):06x}"
    at = _times(people, t, r.randint(25, 60), (1, 6))
    return [people.api(moment, "reports", endpoint, 200, r.uniform(1200, 4000)) for moment in at], ()


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
        ato_new_device_payee_transfer,
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


# the scenarios of each typology (the rows of docs/typologies.md), for the report's recall by typology
TYPOLOGIES = {
    "account takeover": (
        "ato_burst_then_new_device",
        "ato_contact_change_transfer",
        "ato_new_device_payee_transfer",
        "impossible_travel",
        "login_failed_burst",
    ),
    "SIM swap or second-factor reset": ("ato_reset_payee_transfer",),
    "credential stuffing": ("credential_stuffing_ip", "shared_device"),
    "APP scam": ("app_scam_escalation", "transfer_amount_anomaly"),
    "money mule: fan-in, collector": ("aml_mule_fan_in",),
    "money mule: fan-out": ("aml_mule_fan_out",),
    "money mule: pass-through": ("aml_pass_through", "aml_rapid_in_out"),
    "layering to a new payee": ("aml_round_amount_new_payee",),
    "structuring": ("aml_structuring_cash",),
    "dormant account reactivated": ("aml_dormant_reactivated",),
    "high-risk country flows": ("card_high_risk_country", "transfer_high_risk_country"),
    "card testing": ("card_testing",),
    "card: stolen card used": ("card_velocity", "card_amount_anomaly", "card_new_gambling"),
    "card: cloned or cross-border": ("card_impossible_travel", "card_multiple_countries"),
    "ATM cash-out": ("card_atm_cashout",),
    "customer notification": (
        "notify_large_transaction",
        "notify_low_balance",
        "notify_card_abroad",
        "notify_salary_received",
    ),
    "operations": ("ops_fx_rate_missing", "ops_api_error_rate", "ops_api_latency", "ops_source_silent"),
}
TYPOLOGY = {scenario: typology for typology, scenarios in TYPOLOGIES.items() for scenario in scenarios}
EVERYDAY_AROUND = 3  # at most this many of the customer's own everyday events amid a scenario's


def build(people: Population, name: str, t: float) -> tuple[Label | None, Events]:
    """The events and label of scenario ``name`` starting at ``t`` (None: cannot run now).

    The customer's own everyday payments and logins (none to ``EVERYDAY_AROUND``) are mixed
    into a scenario that lasts a while. They are not the scenario's: the label names them apart
    (``around``), as everyday events on which its detections may fire while it unfolds.
    """
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
        customer = people.at_home(t)
    events, also = SCENARIOS[name](people, customer, t)
    ids = [e["event_id"] for e in events]
    ends = max(_at(e) for e in events)
    around = []
    if name not in CUSTOMERLESS and name != "aml_dormant_reactivated" and ends > t:
        around = [
            people.everyday(customer, people.rng.uniform(t, ends))
            for _ in range(people.rng.randint(0, EVERYDAY_AROUND))
        ]
    customer_id = None if name in CUSTOMERLESS else customer.id
    label = Label(name, (name,), also, customer_id, ids, t, ends, [e["event_id"] for e in around])
    return label, [*events, *around]
