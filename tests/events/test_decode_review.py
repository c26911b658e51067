"""The decoder after the review of issue 15: no event_id echoed unless it passed validation
and holds no card number in its full value (item 19); no control character, NUL or lone
surrogate reaches a store (PostgreSQL refuses NUL); no value lost to IBAN masking (item 20)."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
import pytest

from ringfence.errors import EventError, FieldError
from ringfence.events import decode_batch, validate_event
from ringfence.events.sensitive import SAME_MASKED_KEY, scan
from ringfence.testing import event

# the validating clock, an hour on: events the factory dates "now" at any point of a long test
# session are never more than the allowed 5 minutes ahead of it
NOW = time.time() + 3600
CUSTOM = frozenset({"loan.applied"})
PAN = "4111111111111111"
ENVELOPE_STRINGS = ("event_id", "customer_id", "account_id", "source", "type")


def custom(**data: Any) -> dict[str, Any]:
    return {**event(), "type": "loan.applied", "data": data}


def rejections(*bodies: dict[str, Any]) -> list[dict[str, Any]]:
    body = json.dumps(list(bodies)).encode()
    batch = decode_batch(body, ndjson=False, now=NOW, max_events=100, custom_types=CUSTOM)
    assert msgspec.json.encode([r.to_dict() for r in batch.rejected])  # every answer can be encoded
    return [r.to_dict() for r in batch.rejected]


def faults(rejection: dict[str, Any]) -> dict[str, str]:
    return {e["field"]: e["message"] for e in rejection["errors"]}


# -- item 19: an event_id is echoed only when valid and free of card numbers ----------------------


def test_a_pan_at_the_end_of_a_too_long_event_id_is_not_echoed() -> None:
    (rejected,) = rejections({**event(), "event_id": "x" * 116 + PAN})
    assert rejected["event_id"] is None  # it echoed "x" * 116 + 12 digits of the PAN
    assert PAN[:12] not in json.dumps(rejected)


@pytest.mark.parametrize("event_id", ["a" * 129, "", 5, None, ["evt"], "evt\u0000", "evt\n", "x" * 200 + PAN])
def test_an_event_id_that_failed_validation_is_never_echoed(event_id: Any) -> None:
    (rejected,) = rejections({**event(), "event_id": event_id})
    assert rejected["event_id"] is None
    assert "event_id" in faults(rejected)


def test_a_valid_event_id_is_echoed_when_another_field_fails() -> None:
    (rejected,) = rejections({**event(), "event_id": "evt-1", "source": "bad one"})
    assert rejected["event_id"] == "evt-1"


def test_an_event_id_in_a_body_too_deep_to_read_is_not_echoed() -> None:
    for event_id in ("x" * 116 + PAN, "evt-2"):
        body = json.dumps({**custom(deep="DEEP"), "event_id": event_id})
        body = body.replace('"DEEP"', "[" * 5000 + "]" * 5000)
        with pytest.raises(EventError) as caught:
            validate_event(body.encode(), NOW, CUSTOM)  # as a caller that did not split a body would
        assert [e.field for e in caught.value.errors] == ["$"]
        assert caught.value.event_id is None


# -- NUL, control characters and lone surrogates --------------------------------------------------


@pytest.mark.parametrize("name", ENVELOPE_STRINGS)
@pytest.mark.parametrize("char", ["\u0000", "\u0001", "\t", "\n", "\u007f", "\u0085", "\u009f"])
def test_control_characters_in_envelope_strings_are_rejected_naming_the_field(name: str, char: str) -> None:
    body = {**event(), "account_id": "acc-1", name: f"web{char}"}
    if name == "type":
        body[name] = f"login.failed{char}"
    (rejected,) = rejections(body)
    assert name in faults(rejected), rejected
    assert "\u0000" not in json.dumps(rejected, ensure_ascii=False)


@pytest.mark.parametrize("name", ENVELOPE_STRINGS)
@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u200f", "\u200b", "\ufeff", "\u00ad", "\u2028", "\u2029"])
def test_invisible_format_characters_in_envelope_strings_are_rejected_naming_the_field(name: str, char: str) -> None:
    """A customer id "\u202e24_suc" showed as "cus_42" in the alerts list (a search for cus_42
    found nothing); a zero-width space makes two ids that read alike."""
    body = {**event(), "account_id": "acc-1", name: f"{char}24_suc"}
    if name == "type":
        body[name] = f"login.failed{char}"
    (rejected,) = rejections(body)
    assert name in faults(rejected), rejected
    if name not in ("source", "type"):  # those two are ASCII names, as their pattern says
        assert "format character" in json.dumps(rejected) or "line break" in json.dumps(rejected)


def test_format_characters_in_data_strings_are_kept() -> None:
    (accepted,) = decode_batch(
        json.dumps([custom(note="\u202eright to left\u202c")]).encode(),
        ndjson=False,
        now=NOW,
        max_events=10,
        custom_types=CUSTOM,
    ).events
    assert accepted.data["note"] == "\u202eright to left\u202c"


@pytest.mark.parametrize(
    "data",
    [
        {"note": "a\u0000b"},
        {"nested": [{"deep": "\u0000"}]},
        {"a\u0000b": 1},
        {"nested": {"\u0000": "x"}},
    ],
)
def test_nul_in_any_data_string_or_key_is_rejected_naming_the_field(data: dict[str, Any]) -> None:
    good = custom(note="fine")
    batch = decode_batch(
        json.dumps([custom(**data), good]).encode(), ndjson=False, now=NOW, max_events=10, custom_types=CUSTOM
    )
    assert len(batch.events) == 1
    (rejected,) = batch.rejected
    (error,) = rejected.errors
    assert error.field.startswith("data.")
    assert "U+0000" in error.message
    assert "\u0000" not in error.field  # the path names the key, printably


def test_nul_in_a_built_in_types_data_is_rejected() -> None:
    (rejected,) = rejections(event("transfer.initiated", channel="mobile\u0000"))
    assert faults(rejected) == {"data.channel": "holds a control character (U+0000)"}


def test_tab_cr_and_lf_stay_allowed_in_data_strings() -> None:
    ev = validate_event(json.dumps(custom(note="line 1\r\n\tline 2", **{"a\tb": 1})).encode(), NOW, CUSTOM)
    assert ev.data["note"] == "line 1\r\n\tline 2"


def test_lone_surrogates_are_faults_in_data_strings_and_keys() -> None:
    errors: list[FieldError] = []
    scan({"note": "a\ud800", "k\udfff": 1, "ok": "\U0001f600"}, "data", errors)
    assert [(e.field, e.message) for e in errors] == [
        ("data.note", "holds a lone surrogate (U+D800)"),
        ("data.k\udfff", "object key holds a lone surrogate (U+DFFF)"),
    ]


def test_the_ascii_fast_path_stays_fast() -> None:
    body = json.dumps([custom(note="x" * 200, **{f"k{i}": f"value {i}" for i in range(50)}) for _ in range(1000)])
    started = time.process_time()
    batch = decode_batch(body.encode(), ndjson=False, now=NOW, max_events=1000, custom_types=CUSTOM)
    assert len(batch.events) == 1000
    assert time.process_time() - started < 5


# -- item 20: keys that mask to the same text -----------------------------------------------------


@pytest.mark.parametrize(
    "second",
    [
        "GB82 WEST 1234 5698 7654 32",
        "GB82.WEST.1234.5698.7654.32",
        "\uff27\uff22\uff18\uff12\uff37\uff25\uff33\uff34\uff11\uff12\uff13\uff14\uff15\uff16\uff19\uff18\uff17\uff16\uff15\uff14\uff13\uff12",
    ],
)
def test_object_keys_masking_to_the_same_text_reject_the_event(second: str) -> None:
    (rejected,) = rejections(custom(GB82WEST12345698765432=1, **{second: 2}))
    assert faults(rejected) == {"data.GB****************5432": SAME_MASKED_KEY}
    assert "12345698765432" not in json.dumps(rejected)


def test_different_ibans_as_keys_are_kept_apart() -> None:
    body = custom(GB82WEST12345698765432=1, DE89370400440532013000=2)
    ev = validate_event(json.dumps(body).encode(), NOW, CUSTOM)
    assert ev.data == {"GB****************5432": 1, "DE****************3000": 2}
