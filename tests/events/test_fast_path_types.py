"""What the fast path takes from the event types' structs (``events.fastpath.spec``): what it
cannot check as Python does becomes "never fast", and the constraints it does check, a
pattern's above all, read as msgspec reads them; a type the core cannot take at all turns the
fast path off, logged, and never stops ingest."""

from __future__ import annotations

import time
import typing
import warnings
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.engine import native
from ringfence.events import fastpath
from ringfence.events.decode import validate_event
from ringfence.events.model import Event
from ringfence.events.sensitive import plain_check
from ringfence.events.types import Envelope
from tests.helpers.servers import unavailable

NOW = time.time()
PORTABLE = [
    "^[A-Z]{2}$",
    "^[0-9]{4}$",
    "^[A-Za-z0-9_.:-]+$",
    "^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)+$",
    "^a.c$",
    "ab|cd",
    "^(?:ab)+$",
    "x{2,}",
    "^[^a-c]+$",
    "a*?b",
    "^[A-Z]{2}[0-9]{2,4}$",
    "a\\.b",
    "[.]",
    "^$",
    "(a|b)?c",
    "^[a-z_:-]+$",
    "[a-]",
    "^[ -/]+$",
    "^[,-/]+$",
    "a??b",
    "x{1,2}?y",
    "a|",
    "^(|a)b$",
    "^[@',]+$",
]
NOT_PORTABLE = [
    "[[:alpha:]]",
    "\\d",
    "[\\d]",
    "\\w+",
    "(?i)abc",
    "a*+",
    "a++",
    "(?=a)",
    "(?P<n>a)",
    "[a-z&&[^b]]",
    "[--/]",
    "a{,3}",
    "\\Z",
    "é",
    "[~]",
    "[a-z-9]",
]


@pytest.fixture
def core() -> None:
    if not native.available():
        unavailable("the compiled core ringfence_native is not installed (scripts/_venv.sh builds it where cargo is)")


@pytest.mark.parametrize("pattern", PORTABLE)
def test_patterns_both_engines_read_alike_are_portable(pattern: str) -> None:
    assert fastpath.portable(pattern)


@pytest.mark.parametrize("pattern", NOT_PORTABLE)
def test_patterns_read_otherwise_or_unknown_to_the_core_are_not(pattern: str) -> None:
    assert not fastpath.portable(pattern)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Python's own doubts of [[, && and --
        text = Annotated[str, msgspec.Meta(pattern=pattern)]
    assert fastpath.spec(mi.type_info(text)) == fastpath.NEVER


class Loose(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None


class Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str | None = None


def test_a_struct_that_writes_its_defaults_out_is_never_fast() -> None:
    assert fastpath.spec(mi.type_info(Loose)) == fastpath.NEVER
    assert fastpath.spec(mi.type_info(Strict)) == ("object", [("name", False, ("optional", ("text", 0, None, None)))])


def int_spec(**bounds: int) -> Any:
    return fastpath.spec(mi.type_info(Annotated[int, msgspec.Meta(**bounds)]))


def test_int_bounds_become_inclusive_ones() -> None:
    assert int_spec(gt=0, lt=10) == ("int", 1, 9)
    assert int_spec(ge=-5, le=5) == ("int", -5, 5)
    assert int_spec(le=2**63 - 1) == ("int", None, 2**63 - 1)
    assert int_spec(multiple_of=5) == fastpath.NEVER


@pytest.fixture
def fresh_check() -> Iterator[None]:
    fastpath._check.cache_clear()
    yield
    fastpath._check.cache_clear()


def one_field_check(monkeypatch: pytest.MonkeyPatch, pattern: str) -> tuple[Any, type[msgspec.Struct]]:
    """The core's check for a single event type whose one field has ``pattern``."""
    cls = msgspec.defstruct(
        "Patterned",
        [("f", Annotated[str, msgspec.Meta(pattern=pattern)])],
        forbid_unknown_fields=True,
        omit_defaults=True,
    )
    monkeypatch.setattr(fastpath, "BUILTIN_TYPES", {"x.pattern": cls})
    plain = plain_check()
    assert plain is not None
    return fastpath._event_check(plain), cls


def event_with(value: str, type_: str = "x.pattern", field: str = "f") -> bytes:
    return msgspec.json.encode(
        {
            "event_id": "e1",
            "type": type_,
            "occurred_at": "2026-01-02T03:04:05Z",
            "source": "s",
            "customer_id": "c",
            "data": {field: value},
        }
    )


ASCII = st.text(st.sampled_from("aAbBcCxyzZ09_-.:/ ,@'+"), max_size=10)


@pytest.mark.usefixtures("core")
@pytest.mark.parametrize("pattern", PORTABLE)
@settings(max_examples=150, deadline=None)
@given(value=ASCII | st.sampled_from(["", "ab", "abab", "xx", "a.b", "AB", "GB", "1234", "ac", "abc", "login.ok"]))
def test_the_core_reads_a_portable_pattern_as_msgspec_does(pattern: str, value: str) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        check, cls = one_field_check(monkeypatch, pattern)
        try:
            msgspec.convert({"f": value}, cls)
            valid = True
        except msgspec.ValidationError:
            valid = False
        assert (check.event(event_with(value), NOW) is not None) is valid


@pytest.mark.usefixtures("core", "fresh_check")
def test_types_the_core_cannot_take_turn_the_fast_path_off_and_ingest_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fastpath, "spec", lambda info: ("no such spec",))
    assert fastpath._check() is None
    assert "ingest's fast path is off" in caplog.text
    raw = event_with("d1", "login.succeeded", "device_id").replace(b'"d1"', b'"d1","ip":"10.0.0.1"')
    event = validate_event(raw, NOW)
    assert event.type == "login.succeeded"


def required_customer_envelope() -> type[msgspec.Struct]:
    """The envelope, but its customer_id required though it may be null: the core would take
    its absence for None, which msgspec refuses."""
    hints = typing.get_type_hints(Envelope, include_extras=True)
    others = [(name, hint) for name, hint in hints.items() if name not in ("customer_id", "account_id")]
    return msgspec.defstruct(
        "RequiredCustomer",
        [*others, ("customer_id", hints["customer_id"]), ("account_id", hints["account_id"], None)],
        forbid_unknown_fields=True,
    )


def test_an_envelope_the_core_would_read_otherwise_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert list(fastpath._envelope()) == list(Event.__struct_fields__)
    monkeypatch.setattr(fastpath, "Envelope", required_customer_envelope())
    with pytest.raises(ValueError, match="the envelope's customer_id is not what the fast path reads"):
        fastpath._envelope()


@pytest.mark.usefixtures("core", "fresh_check")
def test_the_core_refuses_an_envelope_in_another_order_than_the_event(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    specs = fastpath._envelope()
    monkeypatch.setattr(fastpath, "_envelope", lambda: dict(reversed(specs.items())))
    assert fastpath._check() is None
    assert "not the fast path's, in Event's order" in caplog.text
