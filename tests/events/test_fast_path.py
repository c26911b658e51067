"""The compiled core's fast path through validation (``events.fastpath``): a differential test
against the full validation, the specification. Whatever event the fast path accepts, the full
validation accepts as the same event, byte for byte as the journal stores it; on simulated
traffic it accepts nearly every event; whatever it is unsure of, the full validation decides
(the same answer, event or rejection, with the fast path as without it)."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
import zlib
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringfence.engine import native
from ringfence.errors import EventError
from ringfence.events import decode, fastpath
from ringfence.events.decode import split_body, validate_event, validate_in_full
from ringfence.events.fx import FxRate, FxTable
from ringfence.events.model import encode_event
from ringfence.events.types import BUILTIN_TYPES, MAX_EVENT_BYTES
from ringfence.log.base import stored_event
from ringfence.simulate.traffic import Traffic
from tests.helpers.servers import unavailable

NOW = time.time() + 3600
TODAY = dt.datetime.fromtimestamp(NOW, dt.UTC).date()
PARTITIONS = 16
FX = FxTable(
    "EUR",
    {c: FxRate(c, Decimal(r), TODAY) for c, r in [("USD", "0.92"), ("GBP", "1.17"), ("JPY", "0.0061")]},
    version=1,
)


@pytest.fixture(autouse=True)
def core() -> None:
    if not native.available():
        unavailable("the compiled core ringfence_native is not installed (scripts/_venv.sh builds it where cargo is)")


def full(raw: bytes | msgspec.Raw, sources: frozenset[str] | None = None) -> bytes | str:
    """The full validation's outcome: the event as stored, or the rejection."""
    try:
        return encode_event(validate_in_full(raw, NOW, ("custom.event",), sources, FX))
    except EventError as error:
        return f"rejected {error.event_id!r}: {error.errors}"


def fast(raw: bytes | msgspec.Raw, sources: frozenset[str] | None = None) -> bytes | None:
    """The fast path's event as stored, having checked that the stored form the core makes
    alone (ingest's) is that event's, or declined."""
    event = fastpath.fast_event(raw, NOW, sources, FX)
    stored = fastpath.fast_stored([raw], NOW, sources, FX, PARTITIONS)[0]
    if stored is not None:
        assert event is not None
        assert stored == stored_event(event, PARTITIONS)
    return None if event is None else encode_event(event)


def traffic(seed: int, count: int = 3000) -> list[dict[str, Any]]:
    return list(Traffic(seed=seed, customers=500).stream(NOW - 7200, 200, count))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulated_traffic_takes_the_fast_path_to_the_same_events(seed: int) -> None:
    events = traffic(seed)
    body = b"\n".join(msgspec.json.encode(e) for e in events)
    taken = 0
    for item in split_body(body, ndjson=True):  # msgspec.Raw, as ingest hands them over
        assert isinstance(item, msgspec.Raw)
        event = fast(item)
        if event is not None:
            taken += 1
            assert event == full(item)
    assert taken >= 0.95 * len(events)


@pytest.mark.parametrize("seed", [1, 2])
def test_simulated_traffic_is_stored_by_the_core_alone_as_python_stores_it(seed: int) -> None:
    events = traffic(seed)
    body = b"\n".join(msgspec.json.encode(e) for e in events)
    items = split_body(body, ndjson=True)
    stored = fastpath.fast_stored(items, NOW, None, FX, PARTITIONS)
    taken = [(item, s) for item, s in zip(items, stored, strict=True) if s is not None]
    for item, s in taken:
        assert s == stored_event(validate_in_full(item, NOW, (), None, FX), PARTITIONS)
    # all but money in another currency, whose rate Python stamps
    foreign = sum(1 for e in events if e["data"].get("currency") not in (None, "EUR"))
    assert len(taken) >= 0.95 * (len(events) - foreign)
    batch = decode.decode_stored_batch(
        body, ndjson=True, now=NOW, max_events=len(events), partitions=PARTITIONS, stored_form=stored_event, fx=FX
    )
    assert batch.events == [
        stored_event(e, PARTITIONS)
        for e in decode.decode_batch(body, ndjson=True, now=NOW, max_events=len(events), fx=FX).events
    ]


def test_money_in_another_currency_is_left_to_python_to_store() -> None:
    base = next(e for e in traffic(5) if e["type"] == "card.authorization")
    for currency, taken in [("EUR", True), ("USD", False), ("CHF", False)]:
        raw = msgspec.json.encode({**base, "data": {**base["data"], "currency": currency, "amount": "10.05"}})
        assert fastpath.fast_event(raw, NOW, None, FX) is not None
        assert (fastpath.fast_stored([raw], NOW, None, FX, PARTITIONS)[0] is not None) is taken
        assert fast(raw) == full(raw)


def floats_events(lat: float, latency: float) -> list[bytes]:
    api = {
        "event_id": "a-1",
        "type": "api.request",
        "occurred_at": "2026-01-02T03:04:05.678901+05:30",
        "source": "gateway",
        "data": {"service": "payments", "endpoint": "/x", "status": 200, "latency_ms": latency},
    }
    geo = login(data={"geo": {"lat": lat, "lon": 0.5, "country": "GB"}})
    return [msgspec.json.encode(geo), msgspec.json.encode(api)]


@settings(max_examples=3000, deadline=None)
@given(st.floats(min_value=-90, max_value=90), st.floats(min_value=0, max_value=86_400_000))
def test_floats_are_stored_as_msgspec_writes_them(lat: float, latency: float) -> None:
    for raw in floats_events(lat, latency):
        event = fast(raw)  # declined: -0.0, a float whose digits could be a card number
        if event is not None:
            assert event == full(raw)


@pytest.mark.parametrize(
    ("lat", "latency"), [(1e-300, 123456.789), (2.5e-5, 0.000123), (1e-4, 1e7), (-1e-7, 30.0), (51.5, 86_400_000.0)]
)
def test_floats_in_every_form_msgspec_writes_are_stored_by_the_core(lat: float, latency: float) -> None:
    for raw in floats_events(lat, latency):
        assert fastpath.fast_stored([raw], NOW, None, FX, PARTITIONS)[0] is not None
        assert fast(raw) == full(raw)


def test_the_reference_currency_and_the_keys_sources_are_the_tables_and_the_requests() -> None:
    base = next(e for e in traffic(5) if e["type"] == "card.authorization")
    usd = FxTable("USD", {"EUR": FxRate("EUR", Decimal("1.08"), TODAY)}, version=2)
    for currency, taken in [("USD", True), ("EUR", False)]:
        raw = msgspec.json.encode({**base, "data": {**base["data"], "currency": currency, "amount": "10.05"}})
        stored = fastpath.fast_stored([raw], NOW, None, usd, PARTITIONS)[0]
        assert (stored is not None) is taken
        if stored is not None:
            assert stored == stored_event(validate_in_full(raw, NOW, (), None, usd), PARTITIONS)
    raw = msgspec.json.encode(base)
    for sources, taken in [(None, True), (frozenset({base["source"]}), True), (frozenset({"other"}), False)]:
        assert (fastpath.fast_stored([raw], NOW, sources, FX, PARTITIONS)[0] is not None) is taken


def test_an_event_without_a_customer_is_stored_in_its_services_partition() -> None:
    api = next(e for e in traffic(4, 6000) if e["type"] == "api.request")
    for service in ("payments", "cards", "x" * 100):
        raw = msgspec.json.encode({**api, "data": {**api["data"], "service": service}})
        stored = fastpath.fast_stored([raw], NOW, None, FX, PARTITIONS)[0]
        assert stored is not None
        assert stored[2] == zlib.crc32(service.encode()) % PARTITIONS


def test_each_built_in_type_takes_the_fast_path() -> None:
    seen = {e["type"]: e for e in traffic(4, 6000)}
    assert set(seen) == set(BUILTIN_TYPES)
    for event in seen.values():
        raw = msgspec.json.encode(event)
        assert fast(raw) is not None, event["type"]
        assert fast(raw) == full(raw)


def test_money_in_another_currency_is_stamped_as_the_full_validation_stamps_it() -> None:
    base = next(e for e in traffic(5) if e["type"] == "card.authorization")
    for currency, amount in [("USD", "10.05"), ("GBP", "0.01"), ("JPY", "1250"), ("CHF", "3.00")]:
        raw = msgspec.json.encode({**base, "data": {**base["data"], "currency": currency, "amount": amount}})
        assert fast(raw) == full(raw)
        stored = json.loads(full(raw))
        assert "amount_ref" in stored["data"]
        assert stored["data"]["fx"].get("missing", False) is (currency == "CHF")


def login(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1",
        "type": "login.succeeded",
        "occurred_at": "2026-01-02T03:04:05.678Z",
        "source": "mobile-app",
        "customer_id": "cus_1",
        "data": {"device_id": "dev_1", "ip": "10.1.2.3", "geo": {"lat": 51.5, "lon": -0.12, "country": "GB"}},
    }
    data = changes.pop("data", {})
    event.update(changes)
    event["data"].update(data)
    return event


UNSURE = {
    "an IPv6 address": login(data={"ip": "2001:db8::1"}),
    "a time with 7 decimals": login(occurred_at="2026-01-02T03:04:05.1234567Z"),
    "a time with a lowercase t": login(occurred_at="2026-01-02t03:04:05Z"),
    "an offset without a colon": login(occurred_at="2026-01-02T03:04:05+0100"),
    "a custom type": login(type="custom.event"),
    "an unknown envelope field": login(extra=1),
    "an unknown data field": login(data={"extra": 1}),
    "an amount as a number": {
        **login(type="transfer.initiated"),
        "data": {"amount": 12, "currency": "EUR", "payee_id": "p1"},
    },
    "a negative balance": {**login(type="balance.updated"), "data": {"balance": "-12.50", "currency": "EUR"}},
    "an account number": {
        **login(type="payee.added"),
        "data": {"payee_id": "p1", "payee_country": "GB", "payee_account": "GB82WEST12345698765432"},
    },
    "a digit chain": login(customer_id="cus 4111 1111 1111 1111"),
    "a non-ASCII text": login(data={"device_id": "dév"}),
    "a time from the future": login(occurred_at="2199-01-01T00:00:00Z"),
    "an account number to mask": {
        **login(type="payee.added"),
        "data": {"payee_id": "p1", "payee_country": "GB", "payee_account": "acct-5678"},
    },
    "an event without its customer": {k: v for k, v in login().items() if k != "customer_id"},
}


def test_the_plain_login_the_unsure_cases_vary_takes_the_fast_path() -> None:
    raw = msgspec.json.encode(login())
    assert fast(raw) is not None
    assert fast(raw) == full(raw)


def test_a_payee_without_an_account_number_takes_the_fast_path() -> None:
    event = UNSURE["an account number to mask"]
    raw = msgspec.json.encode({**event, "data": {k: v for k, v in event["data"].items() if k != "payee_account"}})
    assert fast(raw) is not None
    assert fast(raw) == full(raw)


@pytest.mark.parametrize("case", sorted(UNSURE))
def test_what_the_fast_path_is_unsure_of_it_leaves_to_the_full_validation(case: str) -> None:
    assert fast(msgspec.json.encode(UNSURE[case])) is None


SPELLINGS = {
    "escapes": rb'{"event_id":"e\u002d1","type":"login.succeeded","occurred_at":"2026-01-02T03:04:05Z",'
    rb'"source":"mobile\u002Dapp","customer_id":"cus_\u0031","data":{"device_id":"d\/1","ip":"10.1.2.3"}}',
    "exponents": rb'{"event_id":"e1","type":"login.succeeded","occurred_at":"2026-01-02T03:04:05Z",'
    rb'"source":"m","customer_id":"c","data":{"device_id":"d","ip":"10.0.0.1","geo":{"lat":1E1,"lon":-1.5e-1,"country":"GB"}}}',
    "minus zero": rb'{"event_id":"e1","type":"login.succeeded","occurred_at":"2026-01-02T03:04:05Z",'
    rb'"source":"m","customer_id":"c","data":{"device_id":"d","ip":"10.0.0.1","geo":{"lat":-0,"lon":-0.0,"country":"GB"}}}',
    "whitespace": b' {\n "event_id" : "e1" ,\t"type":"login.succeeded", "occurred_at":"2026-01-02T03:04:05Z",'
    b'"source":"m","customer_id":"c","data": { "device_id" : "d", "ip" : "10.0.0.1" } } \r\n',
}


@pytest.mark.parametrize("case", sorted(SPELLINGS))
def test_other_spellings_of_json_give_the_same_event_either_way(case: str) -> None:
    raw = SPELLINGS[case]
    assert isinstance(full(raw), bytes), full(raw)
    outcome = fast(raw)
    if case == "minus zero":  # -0 may be read as 0 or -0.0: left to the full validation
        assert outcome is None
    else:
        assert outcome == full(raw)


def long_number(mantissa: str, exponent: int) -> bytes:
    event = msgspec.json.encode(login(data={"geo": {"lat": 1.0, "lon": 2.0}}))
    return event.replace(b'"lat":1.0', f'"lat":{mantissa}e{exponent}'.encode())


@pytest.mark.parametrize(
    ("mantissa", "exponent"),
    [("1" + "0" * 20009, -20009), ("0." + "0" * 20000 + "1", 20001), ("1" + "0" * 33, -33)],
)
def test_numbers_msgspec_may_read_otherwise_are_left_to_the_full_validation(mantissa: str, exponent: int) -> None:
    raw = long_number(mantissa, exponent)
    assert fast(raw) is None
    assert fast(long_number("1" + "0" * 31, -31)) is not None


def test_a_repeated_field_of_data_or_a_struct_in_it_is_left_to_the_full_validation() -> None:
    raw = msgspec.json.encode(login())
    for field, copy in [(b'"ip":', b'"ip":"10.9.9.9","ip":'), (b'"lat":', b'"lat":1.0,"lat":')]:
        assert fast(raw.replace(field, copy)) is None
    transfer = msgspec.json.encode(next(e for e in traffic(8) if e["type"] == "transfer.initiated"))
    assert fast(transfer) is not None
    assert fast(transfer.replace(b'"amount":', b'"amount":"0.01","amount":')) is None


def test_what_is_too_long_is_left_to_the_full_validation() -> None:
    assert fast(msgspec.json.encode(login(event_id="e" * 129))) is None
    assert fast(msgspec.json.encode(login(event_id="e" * 128))) is not None
    padded = msgspec.json.encode(login())[:-1] + b" " * (MAX_EVENT_BYTES + 1) + b"}"
    assert fast(padded) is None
    assert isinstance(full(padded), str)  # refused: too large


def test_text_is_not_bytes_and_is_left_to_the_full_validation() -> None:
    raw = msgspec.json.encode(login())
    check = fastpath._check()
    assert check is not None
    assert check.event(raw.decode(), NOW) is None
    assert check.event(memoryview(raw), NOW) is not None
    assert check.event(bytearray(raw), NOW) is None  # writable: it could change while read
    assert check.event(b"", NOW) is None
    assert check.event(12, NOW) is None
    assert encode_event(validate_event(raw.decode(), NOW, fx=FX)) == full(raw)


def test_a_repeated_field_is_left_to_the_full_validation() -> None:
    raw = msgspec.json.encode(login())
    for repeated in (b'{"event_id":"other",', b'{"data":{},'):
        twice = repeated + raw[1:]
        assert fast(twice) is None


def test_a_source_the_key_may_not_write_is_left_to_the_full_validation() -> None:
    raw = msgspec.json.encode(login())
    assert fast(raw, frozenset({"mobile-app"})) is not None
    assert fast(raw, frozenset({"web"})) is None
    with pytest.raises(EventError, match="may only send events of the source"):
        validate_event(raw, NOW, sources=frozenset({"web"}))


def test_without_the_core_validation_runs_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "_check", lambda: None)
    calls = []
    monkeypatch.setattr(decode, "validate_in_full", lambda *a: calls.append(a) or validate_in_full(*a))
    raw = msgspec.json.encode(login())
    assert encode_event(validate_event(raw, NOW, fx=FX)) == full(raw)
    assert len(calls) == 1


# hostile variations of valid events: the fast path may decline any, and must never differ
TIMES = st.builds(
    lambda d, frac, sep, zone: d.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + frac + zone,
    st.datetimes(min_value=dt.datetime(1999, 12, 31), max_value=dt.datetime(2030, 1, 1)),
    st.sampled_from(["", ".5", ".123", ".123456", ".1234567", "."]),
    st.sampled_from(["T", "t", " "]),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-11:59", "+23:59", "+24:00", "+0100", ""]),
)
TEXTS = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "a", "EUR", "USD", "JPY", "eur", "XXX", "GB", "ES", "5411", "541", "pos", "ATM", "api.request", "x.y"]
)
AMOUNTS = st.sampled_from(["12.50", "12.5", "12", "012.50", "0.00", "-1.00", "1e3", "100", "1.005", " 1.00"])
NUMBERS = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.sampled_from([0, -0.0, 100, 599, 600, 90, 90.000001, -180, 10**12, 1e300])
)
IPS = st.sampled_from(["10.0.0.1", "255.255.255.255", "256.0.0.1", "01.2.3.4", "::1", "1.2.3", "a"])
LEAVES = st.none() | st.booleans() | NUMBERS | TEXTS | AMOUNTS | TIMES | IPS
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3))
BASES = [e for e in traffic(6, 6000) if e["type"] != "login.failed"][:400:7]


def _places(event: dict[str, Any]) -> list[tuple[str, ...]]:
    places = [(k,) for k in event]
    data = event.get("data")
    for key, value in data.items() if isinstance(data, dict) else ():
        places.append(("data", key))
        if isinstance(value, dict):
            places += [("data", key, inner) for inner in value]
    return places


@st.composite
def variations(draw: st.DrawFn) -> bytes:
    event = json.loads(json.dumps(draw(st.sampled_from(BASES))))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        place = draw(st.sampled_from([*_places(event), ("data", "extra"), ("extra",)]))
        parent = event
        for part in place[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if draw(st.booleans()) and place[-1] in parent:
            del parent[place[-1]]
        else:
            parent[place[-1]] = draw(VALUES)
    try:
        return msgspec.json.encode(event)
    except (UnicodeEncodeError, msgspec.EncodeError):
        return json.dumps(event).encode()


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variations())
def test_the_fast_path_never_accepts_what_the_full_validation_would_not_give_the_same(raw: bytes) -> None:
    event = fast(raw)
    if event is not None:
        assert event == full(raw)


def test_variations_reach_both_paths_and_never_differ() -> None:
    rng = random.Random(7)
    times = ["2026-01-02T03:04:05+01:00", "2026-01-02T03:04:05.5-05:30", "2026-01-02 03:04:05Z", "2026-02-30T00:00:00Z"]
    values = [None, 0, -0.0, 12, 1.5, 1e300, "", "a", "12.5", "12.50", "EUR", "10.0.0.1", "::1", *times]
    taken, declined = 0, 0
    for _ in range(1500):
        event = json.loads(json.dumps(rng.choice(BASES)))
        place = rng.choice(_places(event))
        parent = event["data"] if len(place) > 1 else event
        parent = parent[place[1]] if len(place) == 3 else parent
        if rng.random() < 0.3:
            parent.pop(place[-1], None)
        else:
            parent[place[-1]] = rng.choice(values)
        raw = msgspec.json.encode(event)
        outcome = fast(raw)
        if outcome is None:
            declined += 1
        else:
            taken += 1
            assert outcome == full(raw)
    assert taken > 150
    assert declined > 150
