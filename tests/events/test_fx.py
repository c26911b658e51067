"""Money in one reference currency: the stamp ingest puts on an event, the rates it reads, and
rules that give one answer for the same value in any currency."""

from __future__ import annotations

import datetime as dt
from decimal import Context, Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.engine.pack import load_pack_file
from ringfence.errors import EventError, RequestError
from ringfence.events.decode import decode_batch, validate_event
from ringfence.events.fx import FxRate, FxTable, parse_rates, read_csv
from ringfence.testing import event, run_pack

NOW = dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC).timestamp()
TODAY = dt.date(2026, 12, 2)
TABLE = FxTable(
    "EUR",
    {
        "JPY": FxRate("JPY", Decimal("0.0061"), TODAY),  # 0 decimals
        "KWD": FxRate("KWD", Decimal("2.97"), TODAY),  # 3 decimals
        "HUF": FxRate("HUF", Decimal("0.0025"), TODAY),
        "USD": FxRate("USD", Decimal("0.92"), TODAY - dt.timedelta(days=10)),  # stale at NOW
    },
    version=3,
    max_age_days=4,
)


def stamped(currency: str, amount: str, type_: str = "transfer.initiated", table: FxTable = TABLE) -> dict[str, Any]:
    field = "balance" if type_ == "balance.updated" else "amount"
    raw = event(type_, currency=currency, at=NOW - 60, **{field: amount})
    return validate_event(msgspec.json.encode(raw), NOW, fx=table).data


@pytest.mark.parametrize(
    ("currency", "amount", "expected"),
    [
        ("JPY", "12345", "75.30"),  # 75.3045
        ("KWD", "1.234", "3.66"),  # 3.66498
        ("HUF", "2000.00", "5.00"),
        ("EUR", "1999.99", "1999.99"),
    ],
)
def test_each_amount_is_also_held_in_the_reference_currency_exactly(currency: str, amount: str, expected: str) -> None:
    data = stamped(currency, amount)
    assert data["amount"] == amount  # what the customer sent stays as sent
    assert data["amount_ref"] == expected
    assert data.get("fx", {"reference": "EUR"})["reference"] == "EUR"


def test_the_reference_amount_rounds_half_to_even_once() -> None:
    half = FxTable("EUR", {"JPY": FxRate("JPY", Decimal("0.005"), TODAY)})
    assert stamped("JPY", "1", table=half)["amount_ref"] == "0.00"  # 0.005 -> even
    assert stamped("JPY", "3", table=half)["amount_ref"] == "0.02"  # 0.015 -> even
    # the product is exact before its one rounding: 10009333333303.305000000000001 is above
    # the half, so .31; rounded first to 28 digits (Python's default) it would be .305, then .30
    near = FxTable("EUR", {"KWD": FxRate("KWD", Decimal("0.999999999997"), TODAY)})
    assert stamped("KWD", "10009333333333.333", table=near)["amount_ref"] == "10009333333303.31"
    wide = FxTable("EUR", {"KWD": FxRate("KWD", Decimal("0.123456789012"), TODAY)})
    exact = Context(prec=60).multiply(Decimal("999999999999999.999"), Decimal("0.123456789012"))
    assert stamped("KWD", "999999999999999.999", table=wide)["amount_ref"] == str(exact.quantize(Decimal("0.01")))


def test_a_rate_keeps_the_digits_it_was_given() -> None:
    rates = parse_rates([{"currency": "USD", "rate": "100", "as_of": "2026-12-01"}], "JPY", NOW)
    assert rates[0].to_dict()["rate"] == "100"  # never 1E+2
    yen = FxTable("JPY", {r.currency: r for r in rates})
    data = stamped("USD", "41111111111111.11", table=yen)
    assert data["amount_ref"] == "4111111111111111"  # looks like a card number; ours, not the producer's
    assert data["fx"]["rate"] == "100"


def test_a_custom_type_cannot_send_what_ingest_sets() -> None:
    for name, value in (("amount_ref", "1000000.00"), ("balance_ref", "1"), ("fx", {"rate": "9", "missing": True})):
        raw = {**event("login.succeeded", at=NOW - 60), "type": "acme.payment"}
        raw["data"] = {"amount": "5.00", "currency": "EUR", name: value}
        with pytest.raises(EventError) as caught:
            validate_event(msgspec.json.encode(raw), NOW, custom_types=["acme.payment"], fx=TABLE)
        assert [e.field for e in caught.value.errors] == [f"data.{name}"]
    raw = {**event("login.succeeded", at=NOW - 60), "type": "acme.payment"}
    raw["data"] = {"amount": "2000.00", "currency": "HUF", "note": "ours"}
    data = validate_event(msgspec.json.encode(raw), NOW, custom_types=["acme.payment"], fx=TABLE).data
    assert (data["amount_ref"], data["note"]) == ("5.00", "ours")  # custom money is converted too


def test_the_rate_used_and_its_date_are_recorded_with_the_event() -> None:
    assert stamped("KWD", "1.000")["fx"] == {"reference": "EUR", "rate": "2.97", "as_of": "2026-12-02"}
    assert "fx" not in stamped("EUR", "5.00")  # no conversion, no rate to record
    balance = stamped("JPY", "100", type_="balance.updated")
    assert balance["balance_ref"] == "0.61"
    assert "amount_ref" not in balance


def test_a_stale_rate_is_still_used_and_flagged() -> None:
    data = stamped("USD", "10.00")
    assert data["amount_ref"] == "9.20"
    assert data["fx"]["stale"] is True
    assert [r.currency for r in TABLE.stale(NOW)] == ["USD"]
    assert TABLE.to_dict(NOW)["stale"] == 1


def test_an_event_in_a_currency_with_no_rate_is_kept_flagged_and_counted() -> None:
    body = b"\n".join(
        msgspec.json.encode(event("transfer.initiated", amount=a, currency=c, at=NOW - 60))
        for a, c in (("10.00", "CHF"), ("5.00", "CHF"), ("7.000", "BHD"), ("1.00", "EUR"))
    )
    batch = decode_batch(body, ndjson=True, now=NOW, max_events=10, fx=TABLE)
    assert not batch.rejected
    assert len(batch.events) == 4
    assert batch.events[0].data["amount_ref"] is None  # never the raw amount
    assert batch.events[0].data["fx"] == {"reference": "EUR", "missing": True}
    assert batch.fx_missing == {"CHF": 2, "BHD": 1}


def test_a_producer_cannot_send_its_own_reference_amount() -> None:
    raw = event("transfer.initiated", amount="2000.00", currency="HUF", at=NOW - 60)
    raw["data"]["amount_ref"] = "999999.00"
    with pytest.raises(Exception, match="amount_ref"):
        validate_event(msgspec.json.encode(raw), NOW, fx=TABLE)


def test_rates_are_checked_row_by_row_with_each_fault_named() -> None:
    rows = [
        {"currency": "USD", "rate": "0.92", "as_of": "2026-12-01"},
        {"currency": "USD", "rate": "0.93", "as_of": "2026-12-01"},
        {"currency": "XXY", "rate": "1", "as_of": "2026-12-01"},
        {"currency": "GBP", "rate": "1e3", "as_of": "2026-12-01"},
        {"currency": "CHF", "rate": "0", "as_of": "2026-12-01"},
        {"currency": "JPY", "rate": "0.0061", "as_of": "2027-01-01"},
        {"currency": "EUR", "rate": "1.01", "as_of": "2026-12-01"},
        {"currency": "SEK", "rate": "0.0871234567891", "as_of": "2026-12-01"},
        {"currency": "NOK", "rate": "0.085", "as_of": "yesterday", "note": "x"},
        "USD,0.92",
    ]
    with pytest.raises(RequestError) as caught:
        parse_rates(rows, "EUR", NOW)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_rates"
    fields = [e["field"] for e in caught.value.details["errors"]]  # type: ignore[index]
    assert fields == [
        "rates[1].currency",
        "rates[2].currency",
        "rates[3].rate",
        "rates[4].rate",
        "rates[5].as_of",
        "rates[6].rate",
        "rates[7].rate",
        "rates[8].note",
        "rates[8].as_of",
        "rates[9]",
    ]


def test_the_reference_currency_may_be_listed_at_1_and_a_csv_is_read_by_its_header() -> None:
    text = "as_of,currency,rate,source\n2026-12-01,USD,0.92,ECB\n2026-12-01,EUR,1,ECB\n2026-12-01,JPY,0.0061,ECB\n"
    rates = parse_rates(read_csv(text), "EUR", NOW)
    assert {r.currency: str(r.rate) for r in rates} == {"USD": "0.92", "JPY": "0.0061"}
    with pytest.raises(RequestError, match="header must name"):
        read_csv("code,value\nUSD,0.92\n")


def test_a_table_with_no_rate_parses_as_one_for_a_deployment_that_converts_nothing() -> None:
    assert parse_rates(read_csv("currency,rate,as_of\n"), "EUR", NOW) == []  # refused only over rates in force


HEAVY = load_pack_file(None)  # the default pack: every amount threshold in the reference currency
RATED = sorted(TABLE.rates)


def _hits(currency: str, amount: str, type_: str) -> set[str]:
    extra = {"approved": True} if type_ == "card.authorization" else {}
    raw = event(type_, amount=amount, currency=currency, at=NOW - 60, **extra)
    return {s.rule_id for s in run_pack(HEAVY, [raw], fx=TABLE)}


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(RATED),
    st.integers(min_value=0, max_value=10**9),
    st.sampled_from(["transfer.initiated", "card.authorization"]),
)
def test_a_rule_gives_one_answer_for_one_value_in_any_currency(currency: str, minor: int, type_: str) -> None:
    """The same value sent in another currency at the table's rate fires the same rules."""
    exponent = {"JPY": 0, "KWD": 3}.get(currency, 2)
    amount = str(Decimal(minor).scaleb(-exponent))
    in_reference = stamped(currency, amount, type_)["amount_ref"]
    assert _hits(currency, amount, type_) == _hits("EUR", in_reference, type_)


def test_a_small_forint_payment_is_not_a_large_one() -> None:
    """2,000 HUF (about EUR 5) raised notify_large_transaction when amounts were compared raw."""
    assert "notify_large_transaction" not in _hits("HUF", "2000.00", "transfer.initiated")
    assert "notify_large_transaction" in _hits("HUF", "1000000.00", "transfer.initiated")  # EUR 2,500
    assert "notify_large_transaction" in _hits("EUR", "2000.00", "transfer.initiated")
    assert "notify_large_transaction" not in _hits("EUR", "1999.99", "transfer.initiated")


def test_no_threshold_fires_on_an_amount_without_a_rate_and_operations_are_told() -> None:
    raw = event("transfer.initiated", amount="99999999.00", currency="CHF", at=NOW - 60)
    signals = run_pack(HEAVY, [raw], fx=TABLE)
    assert [s.rule_id for s in signals] == ["ops_fx_rate_missing"]
    assert signals[0].title == "No FX rate for CHF"
    assert signals[0].fx == {"reference": "EUR", "missing": True}


def test_the_alert_evidence_records_the_rate_used() -> None:
    raw = event("transfer.initiated", amount="1000000.00", currency="HUF", at=NOW - 60)
    (signal,) = [s for s in run_pack(HEAVY, [raw], fx=TABLE) if s.rule_id == "notify_large_transaction"]
    assert signal.fx == {"reference": "EUR", "rate": "0.0025", "as_of": "2026-12-02"}
