"""The compiled core's quick look before the sensitive-value scan (``sensitive.plain``): a
differential test against the scan, the specification. Whatever the look calls plain, the scan
finds nothing in and leaves as it is; and validation gives the same result, event or
rejection, with the look and without it, on simulated traffic and on hostile values."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringfence.engine import native
from ringfence.errors import EventError, FieldError
from ringfence.events import decode, fastpath, sensitive
from ringfence.events.controls import data_fault, envelope_fault
from ringfence.events.decode import validate_event
from ringfence.events.iban import IBAN_LENGTHS, NUMERIC_ACCOUNTS, iban_valid, mask_ibans
from ringfence.events.model import Event
from ringfence.events.pan import CARD_GROUPINGS, looks_like_pan, luhn_valid
from ringfence.events.sensitive import plain, scan
from ringfence.simulate.traffic import Traffic
from tests.helpers.servers import unavailable

SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = time.time() + 3600


@pytest.fixture(autouse=True)
def core() -> None:
    if not native.available():
        unavailable("the compiled core ringfence_native is not installed (scripts/_venv.sh builds it where cargo is)")


def card(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def iban(country: str, rng: random.Random) -> str:
    """A valid IBAN of ``country``: a random BBAN of its length, and the check digits."""
    alphabet = "0123456789" if country in NUMERIC_ACCOUNTS else "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    bban = "".join(rng.choice(alphabet) for _ in range(IBAN_LENGTHS[country] - 4))
    return next(f"{country}{n:02d}{bban}" for n in range(2, 99) if iban_valid(f"{country}{n:02d}{bban}"))


def grouped(text: str, sizes: tuple[int, ...], separator: str) -> str:
    parts, at = [], 0
    for size in sizes:
        parts.append(text[at : at + size])
        at += size
    return separator.join(parts) + text[at:]


_rng = random.Random(17)
CARDS = [card(p, n, _rng) for p, n in [("4", 16), ("4", 13), ("4", 19), ("51", 16), ("34", 15), ("36", 14), ("62", 19)]]
IBANS = [iban(c, _rng) for c in ("GB", "DE", "NO", "FR", "MT", "RU")]
SEPARATORS = [" ", "-", ".", "/", "_", "  ", " - ", ":", "|", "+", "*", "~", "     ", "      "]
# pieces hostile text is made of: cards and IBANs whole, grouped, cut, glued to words; digits
# and letters near the thresholds; characters the scan reads specially
PIECES = (
    CARDS
    + IBANS
    + [grouped(c, g, s) for c in CARDS for g in sorted(CARD_GROUPINGS) for s in SEPARATORS[:4]]
    + [grouped(i, (4,) * 8, s) for i in IBANS for s in SEPARATORS[:4]]
    + [i.lower() for i in IBANS]
    # separators a URL or a page spells: the scan reads the text decoded too
    + [
        grouped(c, (4, 4, 4, 4), s)
        for c in (CARDS[0], CARDS[3])
        for s in ("%20", "%2D", "&#32;", "%2520", "&nbsp;", "%u0020", "\\u0020", "\\x20")
    ]
    + [c[:k] for c in CARDS for k in (6, 12)]
    + ["0" * 13, "9" * 12, "+44 7700 900123", "004915123456789", "d5523376-e683-40b0-b630-172501440767"]
    # identifiers by shape whose hex digits pass an IBAN's check, or spell one
    + [
        "2be893f4-56b3-4574-9617-2adf654d479a",
        "de893704-0044-0532-0130-00aabbccddee",
        "0xab" + "DE89370400440532013000" + "0" * 40,
    ]
    + ["GB", "DE", "gb82", "WEST", "tok_", "cus_", "card", "x", "\u200b", "\u00a0", "\uff14", "\u0664", "\t", "\x7f"]
)
hostile_text = st.lists(
    st.sampled_from(PIECES) | st.sampled_from(SEPARATORS) | st.text(alphabet="0123456789 -.GBDEab", max_size=24),
    max_size=6,
).map("".join)
texts = hostile_text | st.text(max_size=40)


@SETTINGS
@given(texts)
def test_plain_text_holds_nothing_the_scan_finds_or_changes(text: str) -> None:
    if plain(text):
        assert not looks_like_pan(text)
        assert mask_ibans(text) == text
        assert data_fault(text) is None
        assert envelope_fault(text) is None


def test_every_card_and_iban_form_is_not_plain() -> None:
    found = [t for t in PIECES if looks_like_pan(t) or mask_ibans(t) != t]
    assert len(found) > 100
    assert [t for t in found if plain(t)] == []
    for c in CARDS:  # as JSON numbers too, and inside a structure, as a key
        assert not plain(int(c))
        assert not plain(float(c[:15]))
        assert not plain({"a": [{"b": c}]})
        assert not plain({c: 1})


def test_ordinary_values_are_plain() -> None:
    for value in ["cus_0085943", "dev_c3804122da", "10.37.135.1", "bench1-000000000001", "", "tok_3ec7d02de69c"]:
        assert plain(value), value
    assert plain({"merchant": {"id": "mer_17747", "mcc": "5912"}, "amount": "6.84", "approved": True, "n": None})
    assert plain([1, -2, 3.5, 999_999_999_999, -999_999_999_999.0])


def test_numbers_a_card_or_an_error_may_hide_in_are_not_plain() -> None:
    for number in [10**12, -(10**12), 2**63, -(2**63) - 1, 1e12, float("inf"), float("nan"), -float("inf")]:
        assert not plain(number), number


def test_nesting_at_the_scan_limit_is_not_plain() -> None:
    def nested(depth: int) -> Any:
        value: Any = 1
        for _ in range(depth):
            value = [value]
        return value

    assert plain(nested(sensitive.MAX_DATA_DEPTH))
    assert not plain(nested(sensitive.MAX_DATA_DEPTH + 1))


leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([10**12 - 1, 10**12, int(CARDS[0]), -int(CARDS[3])])
    | st.floats()
    | texts
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=25,
)


@SETTINGS
@given(json_values)
def test_a_plain_value_is_left_as_it_is_by_the_scan(value: Any) -> None:
    if plain({"v": value}):
        errors: list[FieldError] = []
        assert scan({"v": value}, "data", errors) == {"v": value}
        assert errors == []


Outcome = Event | tuple[str | None, list[FieldError]]


def outcome(raw: bytes) -> Outcome:
    """What validation makes of ``raw``: the event, or the rejection's echoed id and errors."""
    try:
        return validate_event(raw, NOW, custom_types=("custom.event",))
    except EventError as error:
        return (error.event_id, error.errors)


def mutations(event: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    """``event`` with a hostile value put in one place: an envelope string, a data field, a key."""
    hostile: list[Any] = [rng.choice(PIECES), rng.choice(CARDS), int(rng.choice(CARDS)), rng.choice(IBANS)]
    hostile += [10**12, 2**64, 1e300, [[[[[[[1]]]]]]], "a\u0000b", "\ud800", rng.choice(PIECES) + " x"]
    out = []
    for value in hostile:
        for place in ("event_id", "customer_id", "account_id", "data", "key"):
            e = msgspec.json.decode(msgspec.json.encode(event))
            if place == "data" and e["data"]:
                e["data"][rng.choice(sorted(e["data"]))] = value
            elif place == "key":
                e["data"][str(value)] = 1
            else:
                e[place] = value
            out.append(e)
    return out


def as_json(event: dict[str, Any]) -> bytes:
    """UTF-8 JSON, or with \\u escapes where it holds a lone surrogate (which UTF-8 cannot carry)."""
    try:
        return msgspec.json.encode(event)
    except UnicodeEncodeError:
        return json.dumps(event).encode()


@pytest.mark.parametrize("seed", [1, 2])
def test_validation_is_the_same_with_the_quick_look_and_without(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    traffic = Traffic(seed=seed, customers=500)
    events = list(traffic.stream(NOW - 7200, 200, 3000))
    events += [dict(e, type="custom.event") for e in events[:50]]  # free-form data, keys scanned
    cases = [msgspec.json.encode(e) for e in events]
    cases += [as_json(m) for e in rng.sample(events, 60) for m in mutations(e, rng)]
    check = sensitive.plain_check()
    assert check is not None
    counted = {"plain": 0}

    def counting(value: Any) -> bool:
        result = check.value(value)
        counted["plain"] += result
        return result

    monkeypatch.setattr(decode, "plain", counting)
    monkeypatch.setattr(decode, "fast_event", lambda *args: None)  # the look inside the full validation
    differ = []
    for raw in cases:
        with_look = outcome(raw)
        with monkeypatch.context() as m:
            m.setattr(decode, "plain", lambda value: False)
            without = outcome(raw)
        if with_look != without:
            differ.append((raw, with_look, without))
    assert differ == []
    assert counted["plain"] > len(events)  # the look did skip the scan, for most events


def test_without_the_core_nothing_is_plain_and_validation_still_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sensitive, "plain_check", lambda: None)
    monkeypatch.setattr(fastpath, "_check", lambda: None)  # without the core, no fast path either
    assert not plain("cus_1")
    raw = msgspec.json.encode(
        {
            "event_id": "e1",
            "type": "login.succeeded",
            "occurred_at": "2026-01-01T00:00:00Z",
            "source": "app",
            "customer_id": f"c {CARDS[0]}",
            "data": {},
        }
    )
    with pytest.raises(EventError, match="card number"):
        validate_event(raw, NOW)


def test_an_identifier_by_shape_is_plain_whole_so_uuid_event_ids_stay_on_the_fast_path() -> None:
    """The scan takes UUIDs and standard hex hashes out (``events.identifiers``); a text that is
    one, whatever its hex digits spell, is plain. One with anything around it gets the usual look."""
    for identifier in (
        "2be893f4-56b3-4574-9617-2adf654d479a",
        "DE893704-0044-0532-0130-00AABBCCDDEE",
        "0X" + "ab" + "DE89370400440532013000" + "0" * 40,
        "de89370400440532013000" + "f" * 10,
    ):
        assert plain(identifier), identifier
        assert scan(identifier, "x", []) == identifier
    for text in (
        "de893704-0044-0532-0130-00aabbccddee0",
        "de89370400440532013000" + "f" * 11,
        "de89 3704 0044 0532 0130 00",
    ):
        assert not plain(text), text
