"""Fuzzing the event decoder: any body yields accepted events and per-event errors, or a
clear MalformedBody; never a crash."""

from __future__ import annotations

import json
import time

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringfence.events import MalformedBody, decode_batch
from ringfence.events.types import BUILTIN_TYPES
from ringfence.testing import event

# the validating clock, an hour on: events the factory dates "now" at any point of a long test
# session are never more than the allowed 5 minutes ahead of it
NOW = time.time() + 3600
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def check(body: bytes, ndjson: bool) -> None:
    try:
        batch = decode_batch(body, ndjson=ndjson, now=NOW, max_events=50)
    except MalformedBody:
        return
    assert batch.size >= 1
    for rejection in batch.rejected:
        assert rejection.errors


@SETTINGS
@given(st.binary(max_size=400), st.booleans())
def test_random_bytes(body: bytes, ndjson: bool) -> None:
    check(body, ndjson)


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(["event_id", "type", "occurred_at", "source", "customer_id", "data", "x"]),
        json_values,
        max_size=7,
    )
)
def test_random_envelopes(envelope: dict[str, object]) -> None:
    check(json.dumps([envelope]).encode(), False)


@SETTINGS
@given(
    st.sampled_from(["card.authorization", "login.failed", "transfer.initiated", "api.request", "payee.added"]),
    st.dictionaries(st.text(max_size=12), json_values, max_size=6),
)
def test_valid_envelopes_with_random_data(type_: str, data: dict[str, object]) -> None:
    body = {**event(type_), "data": data}
    check(json.dumps([body]).encode(), False)


@SETTINGS
@given(st.text(max_size=300))
def test_random_text_lines_as_ndjson(text: str) -> None:
    check(text.encode("utf-8", "surrogatepass"), True)


# every field of every built-in type (nested ones too), and a custom type's free-form data
FIELDS = {
    name: [f.encode_name for f in msgspec.structs.fields(cls)] + ["amount", "currency", "ip", "payee_account"]
    for name, cls in BUILTIN_TYPES.items()
}
FIELDS["acme.custom"] = ["amount", "balance", "currency", "ip", "payee_account", "value", "n"]
finite_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(st.sampled_from(sorted(FIELDS)), st.data())
def test_any_value_in_any_field_of_any_type_is_an_event_or_its_rejection(type_: str, draw: st.DataObject) -> None:
    name = draw.draw(st.sampled_from(FIELDS[type_]))
    value = draw.draw(finite_json_values)
    body = event(type_ if type_ in BUILTIN_TYPES else "card.authorization")
    body["type"] = type_
    body["data"] = {**body["data"], name: value}
    batch = decode_batch(
        json.dumps([body]).encode(), ndjson=False, now=NOW, max_events=5, custom_types=frozenset({"acme.custom"})
    )
    assert batch.size == 1
    for rejection in batch.rejected:
        assert rejection.errors
        assert "internal error" not in rejection.errors[0].message
