"""The decoder against hostile producers (issue 15, items 1, 2, 10, 19, 25, 26): nothing sent
raises past it, each bad event is rejected on its own with every fault listed, and a
rejected card number is never echoed."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from ringfence.errors import EventError
from ringfence.events import MalformedBody, decode_batch, validate_event
from ringfence.events import decode as decode_module
from ringfence.events.decode import TooManyEvents
from ringfence.testing import event

# the validating clock, an hour on: events the factory dates "now" at any point of a long test
# session are never more than the allowed 5 minutes ahead of it
NOW = time.time() + 3600
CUSTOM = frozenset({"loan.applied"})
PAN = "4111111111111111"


def custom(**data: Any) -> dict[str, Any]:
    return {**event(), "type": "loan.applied", "data": data}


def rejections(*bodies: dict[str, Any], **options: Any) -> list[dict[str, Any]]:
    batch = decode_batch(json.dumps(list(bodies)).encode(), ndjson=False, now=NOW, max_events=100, **options)
    return [r.to_dict() for r in batch.rejected]


def fields(rejection: dict[str, Any]) -> set[str]:
    return {e["field"] for e in rejection["errors"]}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"amount": 1}, "data.currency"),  # KeyError before
        ({"balance": "1.00"}, "data.currency"),
        ({"amount": 1, "currency": 5}, "data.currency"),
        ({"amount": 1, "currency": None}, "data.currency"),
        ({"amount": None, "currency": "EUR"}, "data.amount"),  # TypeError before
        ({"amount": {}, "currency": "EUR"}, "data.amount"),
        ({"amount": [1], "currency": "EUR"}, "data.amount"),
        ({"amount": "1E+999999999999999999", "currency": "EUR"}, "data.amount"),  # decimal.Overflow before
        ({"ip": 1.5}, "data.ip"),  # TypeError before
        ({"ip": {}}, "data.ip"),
        ({"ip": ["1.2.3.4"]}, "data.ip"),
        ({"ip": "1" * 10_000}, "data.ip"),
        ({"payee_account": 5}, "data.payee_account"),  # AttributeError before
        ({"payee_account": {"iban": "x"}}, "data.payee_account"),
    ],
)
def test_custom_data_of_any_type_is_a_per_event_rejection(data: dict[str, Any], field: str) -> None:
    good = custom(amount="1.00", currency="EUR")
    batch = decode_batch(
        json.dumps([custom(**data), good]).encode(), ndjson=False, now=NOW, max_events=10, custom_types=CUSTOM
    )
    assert [e.event_id for e in batch.events] == [good["event_id"]]
    (rejected,) = batch.rejected
    assert rejected.index == 0
    assert field in {e.field for e in rejected.errors}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"n": 2**64}, "data.n"),
        ({"n": 2**63}, "data.n"),
        ({"n": -(2**63) - 1}, "data.n"),
        ({"deep": [{"list": [1, {"n": 10**30}]}]}, "data.deep[0].list[1].n"),
        ({"obj": {"n": -(10**40)}}, "data.obj.n"),
    ],
)
def test_numbers_beyond_64_bits_in_custom_data_are_rejected_naming_the_path(data: dict[str, Any], field: str) -> None:
    (rejected,) = rejections(custom(**data), custom_types=CUSTOM)
    assert {"field": field, "message": "integer out of range: must be within -2**63 .. 2**63-1"} in rejected["errors"]


def test_64_bit_integers_and_finite_floats_are_accepted() -> None:
    data = {"a": 2**63 - 1, "b": -(2**63), "c": 1.7976931348623157e308, "d": [0.5, {"e": -1e-300}]}
    assert validate_event(json.dumps(custom(**data)).encode(), NOW, CUSTOM).data == data


def test_a_float_beyond_range_in_custom_data_is_rejected() -> None:
    body = json.dumps([custom(x="X")]).replace('"X"', "1e400").encode()
    (rejected,) = decode_batch(body, ndjson=False, now=NOW, max_events=10, custom_types=CUSTOM).rejected
    assert rejected.errors[0].field == "data"


def test_custom_data_nested_too_deep_is_rejected() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = {"d": deep}
    (rejected,) = rejections(custom(x=deep), custom_types=CUSTOM)
    assert "nested deeper than" in rejected["errors"][0]["message"]


def test_every_fault_of_an_event_is_listed_at_once() -> None:
    bad = {
        **event("card.authorization", amount="12.345", currency="eur", channel="telepathy"),
        "occurred_at": "yesterday",
        "source": "bad source!",
        "colour": "red",
    }
    del bad["data"]["card_id"]
    (rejected,) = rejections(bad)
    assert fields(rejected) == {
        "occurred_at",
        "source",
        "colour",
        "data.card_id",
        "data.currency",
        "data.channel",
    }


def test_nested_faults_are_listed_too() -> None:
    bad = event("card.authorization", merchant={"id": "", "mcc": "54", "country": "fr"}, geo={"lat": 91, "lon": 0})
    (rejected,) = rejections(bad)
    assert fields(rejected) == {"data.merchant.id", "data.merchant.mcc", "data.merchant.country", "data.geo.lat"}


def test_a_money_fault_is_listed_with_the_struct_faults() -> None:
    (rejected,) = rejections(event("card.authorization", amount="12.345", channel="telepathy"))
    assert fields(rejected) == {"data.amount", "data.channel"}


def test_a_pan_in_event_id_is_never_echoed() -> None:
    bodies = [
        {**event(), "event_id": PAN},
        {**event(), "event_id": PAN, "occurred_at": "nope"},  # the envelope fails too
        {**event(), "event_id": f"{PAN[:4]} {PAN[4:8]} {PAN[8:12]} {PAN[12:]}", "extra": 1},
        {**event("card.authorization", channel=PAN)},  # msgspec names the value it refuses
        {**event(), "data": {**event()["data"], PAN: 1}},  # ...and the unknown key
        {**event(), "type": f"card.x_{PAN}"},
        custom(**{PAN: "k"}),
        custom(ip=PAN),
        custom(amount=PAN, currency="ZZZ"),
    ]
    answer = json.dumps(rejections(*bodies, custom_types=CUSTOM))
    assert answer.count('"index"') == len(bodies)
    assert PAN not in answer
    assert PAN[-8:] not in answer
    assert json.loads(answer)[0]["event_id"] is None


def test_a_pan_in_event_id_is_not_echoed_when_the_event_cannot_be_decoded_at_all() -> None:
    (rejected,) = rejections({"event_id": PAN})
    assert rejected["event_id"] is None
    assert PAN not in json.dumps(rejected)


def test_an_unexpected_failure_costs_only_its_event_and_logs_no_pan(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = decode_module.validate_event

    def flaky(raw: Any, *args: Any) -> Any:
        if PAN.encode() in bytes(raw):
            raise RuntimeError(f"bug while reading {PAN}")
        return real(raw, *args)

    monkeypatch.setattr(decode_module, "validate_event", flaky)
    with caplog.at_level(logging.ERROR, "ringfence.ingest"):
        batch = decode_batch(
            json.dumps([event(), custom(note=PAN), event()]).encode(), ndjson=False, now=NOW, max_events=10
        )
    assert len(batch.events) == 2
    assert batch.rejected[0].index == 1
    assert "internal error" in batch.rejected[0].errors[0].message
    assert "bug while reading" in caplog.text
    assert PAN not in caplog.text


def test_a_key_bound_to_sources_may_send_only_those() -> None:
    mine, theirs = event(source="mobile-app"), event(source="web")
    batch = decode_batch(
        json.dumps([mine, theirs]).encode(), ndjson=False, now=NOW, max_events=10, sources=frozenset({"mobile-app"})
    )
    assert [e.event_id for e in batch.events] == [mine["event_id"]]
    (rejected,) = batch.rejected
    assert rejected.event_id == theirs["event_id"]
    assert [e.field for e in rejected.errors] == ["source"]
    assert "mobile-app" in rejected.errors[0].message


def test_an_unbound_key_may_send_any_source() -> None:
    body = json.dumps([event(source="mobile-app"), event(source="web")]).encode()
    assert len(decode_batch(body, ndjson=False, now=NOW, max_events=10, sources=None).events) == 2


@pytest.mark.parametrize("ndjson", [False, True])
def test_a_batch_over_the_limit_is_too_many_events(ndjson: bool) -> None:
    events = [json.dumps(event()) for _ in range(11)]
    body = "\n".join(events) if ndjson else f"[{','.join(events)}]"
    with pytest.raises(TooManyEvents) as raised:
        decode_batch(body.encode(), ndjson=ndjson, now=NOW, max_events=10)
    assert (raised.value.count, raised.value.limit) == (11, 10)
    assert isinstance(raised.value, MalformedBody)  # callers that only know MalformedBody still refuse it


def test_ndjson_lines_are_counted_before_any_is_decoded() -> None:
    body = b"{broken\n" * 11
    with pytest.raises(TooManyEvents):
        decode_batch(body, ndjson=True, now=NOW, max_events=10)


def test_a_field_given_twice_is_refused_at_any_depth_by_either_path() -> None:
    """The compiled core declines an event with a duplicate; the full validation names it."""
    from ringfence.events.decode import DUPLICATE_MESSAGE, validate_in_full

    body = (
        b'{"event_id":"e1","type":"card.authorization","occurred_at":"2026-12-05T18:00:00Z","source":"web",'
        b'"data":{"card_id":"tok_1","amount":"1.00","currency":"EUR","channel":"pos","approved":true,'
        b'"merchant":{"id":"m1","mcc":"5411","country":"FR","country":"DE"}},"source":"app"}'
    )
    for validate in (validate_event, validate_in_full):
        with pytest.raises(EventError) as caught:
            validate(body, 1.8e9)
        fields = sorted(e.field for e in caught.value.errors if e.message == DUPLICATE_MESSAGE)
        assert fields == ["data.merchant.country", "source"]
