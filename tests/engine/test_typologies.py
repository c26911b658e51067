"""The default pack's typology detections on small hand-written stories: each fires on the
pattern it names, and stays quiet on the innocent look-alike a bank sees every day."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from ringfence.engine.pack import load_pack_file
from ringfence.events.fx import FxRate, FxTable
from ringfence.simulate.population import Label
from ringfence.simulate.report import evaluate
from ringfence.testing import event, run_pack

PACK = load_pack_file(None)
T = 1_795_000_000.0
RATES = FxTable("EUR", {"USD": FxRate("USD", Decimal("0.92"), dt.date(2026, 11, 18))})  # T is 2026-11-18


def fired(events: list[dict[str, Any]]) -> list[str]:
    return [s.rule_id for s in run_pack(PACK, events, fx=RATES)]


def payee_added(at: float, customer: str, payee: str) -> dict[str, Any]:
    return event("payee.added", at=at, customer_id=customer, payee_id=payee, payee_country="FR")


def transfer(at: float, customer: str, payee: str, amount: str, currency: str = "EUR") -> dict[str, Any]:
    return event("transfer.initiated", at=at, customer_id=customer, payee_id=payee, amount=amount, currency=currency)


def deposit(at: float, customer: str, amount: str, method: str, currency: str = "EUR") -> dict[str, Any]:
    return event("deposit.received", at=at, customer_id=customer, amount=amount, currency=currency, method=method)


def withdrawal(at: float, card: str, amount: str, atm: str = "atm_1") -> dict[str, Any]:
    merchant = {"id": atm, "mcc": "6011", "country": "FR"}
    return event(
        "card.authorization",
        at=at,
        customer_id=f"cus_{card}",
        card_id=card,
        amount=amount,
        merchant=merchant,
        channel="atm",
    )


# --- money mules -----------------------------------------------------------------------------


def test_four_customers_paying_one_account_they_just_added_is_a_collector() -> None:
    events = []
    for i in range(5):
        currency = "USD" if i == 2 else "EUR"  # currencies do not matter
        added = payee_added(T + i * 600, f"cus_{i}", "pay_collector")
        events += [added, transfer(T + i * 600 + 60, f"cus_{i}", "pay_collector", "450.00", currency)]
    assert fired(events[:8]).count("aml_mule_fan_in") == 1  # the fourth sender
    assert fired(events[:6]) == []
    assert fired(events).count("aml_mule_fan_in") == 2  # two hits: one alert (dedup by payee)


def test_tenants_paying_their_landlord_and_a_listed_payee_are_no_mules() -> None:
    """Many pay one account, as they have for months: for none of them is the payee new."""
    tenants = [transfer(T + i * 600, f"cus_{i}", "pay_landlord", "700.00") for i in range(12)]
    assert "aml_mule_fan_in" not in fired(tenants)
    newcomer = [
        payee_added(T + 7200, "cus_new", "pay_landlord"),
        transfer(T + 7300, "cus_new", "pay_landlord", "700.00"),
    ]
    assert fired([*tenants, *newcomer]) == ["aml_mule_fan_in"]  # a known false alert: a new tenant on rent day
    listed = load_pack_file(None).text.replace("  trusted_payees: []", "  trusted_payees: [pay_landlord]")
    assert [s.rule_id for s in run_pack(listed, [*tenants, *newcomer], fx=RATES)] == []


def test_a_customer_spreading_money_over_new_payees_is_a_fan_out() -> None:
    events = []
    for i in range(3):
        events += [
            payee_added(T + i * 900, "cus_1", f"pay_{i}"),
            transfer(T + i * 900 + 60, "cus_1", f"pay_{i}", "800.00"),
        ]
    assert fired(events).count("aml_mule_fan_out") == 1
    assert "aml_mule_fan_out" not in fired(events[:4])  # two payees so far


def test_paying_the_month_s_bills_to_known_payees_is_no_fan_out() -> None:
    added = [payee_added(T - 600 + i, "cus_1", f"pay_new_{i}") for i in range(3)]  # set up, not paid yet
    bills = [transfer(T + i * 300, "cus_1", f"pay_bill_{i}", "700.00") for i in range(6)]  # payday, old payees
    assert "aml_mule_fan_out" not in fired([*added, *bills])


def test_money_in_and_out_again_through_a_new_payee_is_a_pass_through() -> None:
    events = [
        deposit(T, "cus_1", "2000.00", "transfer", "USD"),  # EUR 1,840
        deposit(T + 1800, "cus_1", "1900.00", "transfer"),
        payee_added(T + 3600, "cus_1", "pay_out"),
        transfer(T + 4000, "cus_1", "pay_out", "3500.00"),  # 94 % of EUR 3,740
    ]
    assert "aml_pass_through" in fired(events)


def test_salary_moved_on_to_the_customer_s_new_savings_account_is_no_pass_through() -> None:
    savings = payee_added(T - 86_400, "cus_1", "pay_savings")  # opened at another bank yesterday
    salary = [savings, deposit(T, "cus_1", "3800.00", "salary"), transfer(T + 3600, "cus_1", "pay_savings", "3500.00")]
    assert "aml_pass_through" not in fired(salary)
    bonus = [savings, deposit(T, "cus_1", "3800.00", "transfer"), transfer(T + 3600, "cus_1", "pay_savings", "3500.00")]
    assert "aml_pass_through" in fired(bonus)  # the same, not labelled salary: the exclusion is the label


def test_money_sent_out_before_it_came_in_or_a_little_of_it_is_no_pass_through() -> None:
    before = [payee_added(T - 600, "cus_1", "pay_new"), transfer(T - 300, "cus_1", "pay_old", "3000.00")]
    trickle = [*before, deposit(T, "cus_1", "3000.00", "transfer"), transfer(T + 600, "cus_1", "pay_new", "10.00")]
    assert "aml_pass_through" not in fired(trickle)


# --- payment fraud and scams ---------------------------------------------------------------


def test_payments_to_a_new_payee_growing_each_time_are_an_escalating_scam() -> None:
    events = [
        payee_added(T, "cus_1", "pay_invest"),
        transfer(T + 3600, "cus_1", "pay_invest", "250.00"),
        transfer(T + 86_400, "cus_1", "pay_invest", "700.00"),
        transfer(T + 5 * 86_400, "cus_1", "pay_invest", "1900.00"),
    ]
    signals = run_pack(PACK, events, fx=RATES)
    (scam,) = [s for s in signals if s.rule_id == "app_scam_escalation"]
    assert scam.title == "Escalating payments to new payee pay_invest: 250, 700, 1900 EUR"


def test_smaller_payments_in_between_are_passed_over() -> None:
    amounts = ("500.00", "300.00", "600.00", "1200.00")
    events = [payee_added(T, "cus_1", "pay_x")] + [
        transfer(T + 3600 * (i + 1), "cus_1", "pay_x", a) for i, a in enumerate(amounts)
    ]
    (scam,) = [s for s in run_pack(PACK, events, fx=RATES) if s.rule_id == "app_scam_escalation"]
    assert scam.title == "Escalating payments to new payee pay_x: 500, 600, 1200 EUR"


def test_a_new_landlord_paid_the_same_rent_each_month_is_no_scam() -> None:
    rent = [payee_added(T, "cus_1", "pay_rent")] + [
        transfer(T + 3600 + i * 4 * 86_400, "cus_1", "pay_rent", "1200.00") for i in range(3)
    ]
    assert "app_scam_escalation" not in fired(rent)
    slow = [payee_added(T, "cus_1", "pay_x")] + [
        transfer(T + 3600 + i * 8 * 86_400, "cus_1", "pay_x", a) for i, a in enumerate(("250.00", "700.00", "1900.00"))
    ]
    assert "app_scam_escalation" not in fired(slow)  # over 16 days: past the pattern's 14


def test_a_builder_paid_in_growing_stages_is_alerted_too() -> None:
    """A known false alert: a deposit, then larger stage payments to a new tradesperson."""
    stages = [payee_added(T, "cus_1", "pay_builder")] + [
        transfer(T + 3600 + i * 4 * 86_400, "cus_1", "pay_builder", a)
        for i, a in enumerate(("300.00", "800.00", "2500.00"))
    ]
    assert "app_scam_escalation" in fired(stages)


def history(customer: str, payee: str, amount: str, n: int = 9) -> list[dict[str, Any]]:
    """``n`` everyday transfers around ``amount`` (up to 30 % either way, as people's vary)."""
    spread = [Decimal(amount) * (Decimal("0.7") + Decimal(i % 7) / 10) for i in range(n)]
    return [transfer(T - 86_400 + i * 3600, customer, payee, f"{a:.2f}") for i, a in enumerate(spread)]


def test_a_transfer_far_above_the_customer_s_own_to_a_new_payee_is_an_anomaly() -> None:
    new = [payee_added(T, "cus_1", "pay_new"), transfer(T + 600, "cus_1", "pay_new", "4200.00")]
    assert "transfer_amount_anomaly" in fired([*history("cus_1", "pay_old", "80.00"), *new])


def test_a_large_transfer_to_a_long_known_payee_or_from_a_big_spender_is_no_anomaly() -> None:
    long_ago = payee_added(T - 40 * 86_400, "cus_1", "pay_old")  # past the 30 days a payee is new
    known = [long_ago, *history("cus_1", "pay_old", "80.00"), transfer(T + 600, "cus_1", "pay_old", "4200.00")]
    assert "transfer_amount_anomaly" not in fired(known)
    new = [payee_added(T, "cus_2", "pay_new"), transfer(T + 600, "cus_2", "pay_new", "4200.00")]
    assert "transfer_amount_anomaly" not in fired([*history("cus_2", "pay_old", "3000.00"), *new])  # their own baseline


def test_cards_emptied_at_one_atm_in_minutes_are_a_cash_out() -> None:
    cashout = [withdrawal(T + i * 90, f"tok_{i}", "600.00") for i in range(4)]
    assert fired(cashout).count("card_atm_cashout") == 1  # the fourth card
    assert fired(cashout[:3]) == []
    declined = withdrawal(T + 500, "tok_9", "20.00")
    declined["data"]["approved"] = False
    assert fired([*cashout, declined]).count("card_atm_cashout") == 1  # an alert on a withdrawal of the crew only


def test_cash_from_an_atm_is_no_card_amount_anomaly() -> None:
    payments = [event("card.authorization", at=T + i * 3600, customer_id="cus_1", amount="25.00") for i in range(10)]
    cash = withdrawal(T + 11 * 3600, "tok_1", "400.00")  # the customer's card is tok_1 by default
    cash["customer_id"] = "cus_1"
    assert "card_amount_anomaly" not in fired([*payments, cash])
    spend = event("card.authorization", at=T + 11 * 3600, customer_id="cus_1", amount="400.00", channel="ecom")
    assert "card_amount_anomaly" in fired([*payments, spend])  # the same sum, spent: far above their own


def test_a_busy_atm_at_lunchtime_is_no_cash_out() -> None:
    lunch = [withdrawal(T + i * 60, f"tok_{i}", a) for i, a in enumerate(["50.00", "100.00", "200.00", "400.00"] * 3)]
    spread = [withdrawal(T + i * 900, f"tok_{i}", "600.00") for i in range(6)]  # over 75 minutes
    assert "card_atm_cashout" not in fired(lunch) + fired(spread)


# --- account takeover ----------------------------------------------------------------------


def test_a_second_factor_reset_then_a_new_payee_paid_is_a_takeover() -> None:
    """SIM swap: the attacker moves the one-time codes to their phone, then pays themselves."""
    events = [
        event("mfa.changed", at=T, customer_id="cus_1", channel="sms"),
        payee_added(T + 300, "cus_1", "pay_attacker"),
        transfer(T + 900, "cus_1", "pay_attacker", "1500.00"),
    ]
    assert "ato_reset_payee_transfer" in fired(events)
    late = [events[0], payee_added(T + 3600, "cus_1", "pay_x"), transfer(T + 3700, "cus_1", "pay_x", "1500.00")]
    assert "ato_reset_payee_transfer" not in fired(late)  # a new phone, and a payee an hour later
    small = [*events[:2], transfer(T + 900, "cus_1", "pay_attacker", "50.00")]
    assert "ato_reset_payee_transfer" not in fired(small)  # a new phone, then a friend paid back


def login(at: float, device: str, customer: str = "cus_1") -> dict[str, Any]:
    return event("login.succeeded", at=at, customer_id=customer, device_id=device)


def test_a_login_on_a_never_used_device_then_a_new_payee_paid_is_a_phished_session() -> None:
    """No failed logins, no reset: the fraudster has the password and the one-time code."""
    history = [login(T - 86_400 * 20, "dev_own")]
    session = [
        login(T, "dev_fraud"),
        payee_added(T + 240, "cus_1", "pay_fraud"),
        transfer(T + 600, "cus_1", "pay_fraud", "800.00"),
    ]
    assert fired([*history, *session]) == ["ato_new_device_payee_transfer"]
    usd = [*session[:2], transfer(T + 600, "cus_1", "pay_fraud", "300.00", "USD")]  # EUR 276
    assert fired([*history, *usd]) == ["ato_new_device_payee_transfer"]


def session_after(t: float) -> list[dict[str, Any]]:
    return [payee_added(t + 240, "cus_1", "pay_new"), transfer(t + 600, "cus_1", "pay_new", "800.00")]


def test_a_first_login_a_known_device_a_small_payment_or_a_payee_paid_later_is_no_phished_session() -> None:
    history = [login(T - 86_400 * 20, "dev_own")]
    assert fired([login(T, "dev_first"), *session_after(T)]) == []  # a customer's first login: an enrolment
    assert fired([*history, login(T, "dev_own"), *session_after(T)]) == []  # the customer's own phone
    phone = [
        login(T, "dev_new_phone"),
        event("device.registered", at=T + 30, customer_id="cus_1", device_id="dev_new_phone"),
        payee_added(T + 240, "cus_1", "pay_friend"),
    ]
    assert fired([*history, *phone, transfer(T + 600, "cus_1", "pay_friend", "40.00")]) == []  # a friend paid back
    assert fired([*history, *phone, transfer(T + 2400, "cus_1", "pay_friend", "800.00")]) == []  # 40 minutes on
    other = [*phone, transfer(T + 600, "cus_1", "pay_rent", "800.00")]
    assert fired([*history, *other]) == []  # a new phone, a new payee, and rent to the old landlord


# --- the report --------------------------------------------------------------------------------


def test_the_report_counts_false_alerts_per_detection_and_the_customers_alerted_a_day() -> None:
    kp = {"payee_country": "KP"}
    risky = event("transfer.initiated", at=T, customer_id="cus_a", payee_id="p1", amount="100.00", **kp)
    lookalike = event("transfer.initiated", at=T + 600, customer_id="cus_b", payee_id="p2", amount="90.00", **kp)
    logins = [event("login.succeeded", at=T + 3600 * i, customer_id=f"cus_{c}") for i, c in ((1, "c"), (2, "d"))]
    label = Label("transfer_high_risk_country", ("transfer_high_risk_country",), (), "cus_a", [risky["event_id"]], T, T)
    report = evaluate([risky, lookalike, *logins], [label], PACK)
    assert report.to_dict()["detections"] == {
        "transfer_high_risk_country": {"alerts": 2, "false": 1, "false_per_10k_normal": 3333.333}
    }
    assert report.customers_seen == 4
    assert report.customers_alerted_per_day == 2 / 4  # one calendar day: cus_a and cus_b named
    assert report.customers_falsely_alerted_per_day == 1 / 4  # cus_b, by the look-alike
    assert "| transfer_high_risk_country | 2 | 1 | 3333.33 |" in report.markdown()


def test_an_alert_on_the_customers_own_payment_amid_a_scenario_is_neither_false_nor_a_detection() -> None:
    declines = [event(at=T + i * 20, customer_id="cus_a", amount="1.00", approved=False) for i in range(3)]
    own = event(at=T + 70, customer_id="cus_a", amount="23.00")  # the customer's coffee, amid the testing
    ids = [e["event_id"] for e in declines]
    label = Label("card_testing", ("card_testing",), (), "cus_a", ids, T, T + 60, [own["event_id"]])
    report = evaluate([*declines, own], [label], PACK)
    assert report.to_dict()["detections"]["card_testing"] == {"alerts": 1, "false": 0, "false_per_10k_normal": 0.0}
    assert report.scenarios["card_testing"].detected == 0  # the scenario's own approval never came
    assert report.normal_events == 1
