"""Fuzzing the event decoder: any body yields accepted events and per-event errors, or a
clear MalformedBody; never a crash."""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringfence.events import MalformedBody, decode_batch
from ringfence.testing import event

NOW = time.time()
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
