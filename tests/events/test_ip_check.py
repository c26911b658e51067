"""IP addresses: the check's quick dotted-quad reading accepts exactly what ``ipaddress``
accepts, and an address is kept as sent, whatever its groups spell."""

from __future__ import annotations

import ipaddress
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.errors import EventError
from ringfence.events import validate_event
from ringfence.events.normalise import normalise_data
from ringfence.testing import event


def reference(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return len(value) <= 45


octets = st.one_of(st.integers(0, 300).map(str), st.from_regex(r"[0-9]{1,4}", fullmatch=True), st.just(""))
addresses = st.one_of(
    st.lists(octets, min_size=3, max_size=5).map(".".join),
    st.ip_addresses().map(str),
    st.text(alphabet="0123456789.:abcdef٣ \n", max_size=20),
)


@settings(max_examples=500, deadline=None)
@given(addresses)
def test_an_address_is_accepted_exactly_when_ipaddress_accepts_it(value: str) -> None:
    errors = normalise_data({"ip": value})
    assert (errors == []) is reference(value), value


# exploded and compressed IPv6 addresses whose groups spell, by chance, a Luhn-valid card
# number or a Belgian IBAN (found by scanning random addresses: about one in 1,500 does)
ADDRESSES_THAT_SPELL_NUMBERS = [
    "be01:0001:0000:0000:0:0:0:1",  # BE01 0001 0000 0000: an IBAN's length and check digits
    "BE01:0001:0000:0000::1",
    "4111:1111:1111:1111::",  # a test card number's digits
    "2001:db8::4111:1111:1111:1111",
    "::ffff:4111:1111:1111:1111",
]


@pytest.mark.parametrize("address", ADDRESSES_THAT_SPELL_NUMBERS)
@pytest.mark.parametrize("type_", ["login.succeeded", "custom.session"])
def test_an_ip_address_is_kept_as_sent_whatever_its_groups_spell(address: str, type_: str) -> None:
    data = {"ip": address, "device_id": "d-1"}
    validated = validate_event(json.dumps(event(type_, **data)).encode(), time.time(), custom_types=[type_])
    assert validated.data["ip"] == address


def test_outside_the_ip_field_an_address_spelling_a_card_number_is_refused() -> None:
    """Only ``data.ip`` is checked as an address: elsewhere, ``4111:1111:1111:1111::`` is a card
    number written to look like one."""
    data = {"client_ip": "4111:1111:1111:1111::"}
    with pytest.raises(EventError) as refused:
        validate_event(json.dumps(event("custom.session", **data)).encode(), time.time(), ["custom.session"])
    assert [e.field for e in refused.value.errors] == ["data.client_ip"]


def test_an_address_with_a_zone_keeps_its_address_and_its_zone_is_read_as_text() -> None:
    login = event("login.succeeded", ip="4111:1111:1111:1111::%wlan0", device_id="d-1")
    assert validate_event(json.dumps(login).encode(), time.time()).data["ip"] == "4111:1111:1111:1111::%wlan0"
    login = event("login.succeeded", ip="fe80::1%DE89370400440532013000", device_id="d-1")
    assert validate_event(json.dumps(login).encode(), time.time()).data["ip"] == "fe80::1%DE****************3000"


@pytest.mark.parametrize("zone", ["4111111111111111", "4111:1111:1111:1111::"])
def test_a_card_number_in_an_address_zone_is_refused(zone: str) -> None:
    """A zone (``%eth0``) is free text Python's ``ipaddress`` accepts: it is scanned as text,
    even when it reads as an address itself."""
    data = {"ip": f"fe80::1%{zone}"[:45], "device_id": "d-1"}
    with pytest.raises(EventError) as refused:
        validate_event(json.dumps(event("login.succeeded", **data)).encode(), time.time())
    assert [e.field for e in refused.value.errors] == ["data.ip"]


def test_an_address_spelling_a_card_number_is_no_fault_beside_a_real_one() -> None:
    data = {"ip": "4111:1111:1111:1111::", "device_id": "d-1", "note": "card 4111 1111 1111 1111"}
    body = json.dumps(event("custom.session", **data)).encode()
    with pytest.raises(EventError) as refused:
        validate_event(body, time.time(), custom_types=["custom.session"])
    assert [e.field for e in refused.value.errors] == ["data.note"]
