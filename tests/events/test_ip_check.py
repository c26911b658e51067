"""The IP check's quick dotted-quad reading accepts exactly what ``ipaddress`` accepts."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.events.normalise import normalise_data


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
