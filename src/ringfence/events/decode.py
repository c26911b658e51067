"""Decoding and validating producer payloads into :class:`Event`.

Called by every ingest path (HTTP, replay, Lambda). A body holds one event, a JSON
array of events, or NDJSON; each event is validated on its own so one bad event never
costs the others, and each rejection lists every fault of its event. Nothing a producer
sends raises past :func:`decode_batch` but MalformedBody (the body as a whole is unreadable)
and TooManyEvents; a rejection never echoes a card number, nor an event_id that failed
validation, nor a character no encoder or store accepts.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import msgspec

from ringfence.errors import EventError, FieldError
from ringfence.events.controls import envelope_fault, printable
from ringfence.events.fastpath import fast_event, fast_stored
from ringfence.events.fields import DECODE_ERRORS, TOO_DEEP, decode_fields, field_errors
from ringfence.events.fx import STAMPED, FxTable
from ringfence.events.model import Event, StoredEvent
from ringfence.events.normalise import address_and_zone, normalise_data
from ringfence.events.sensitive import clean, echo, mask_ibans, plain, redact, scan
from ringfence.events.types import (
    BUILTIN_TYPES,
    CUSTOMERLESS_TYPES,
    IP_FIELD,
    MAX_EVENT_BYTES,
    MAX_FUTURE_SKEW_S,
    MIN_OCCURRED_AT,
    Envelope,
)

__all__ = [
    "TOO_DEEP",
    "DecodedBatch",
    "EncodedRejections",
    "MalformedBody",
    "Rejection",
    "StoredBatch",
    "TooManyEvents",
    "decode_batch",
    "decode_stored_batch",
    "rejections_answer",
    "split_body",
    "validate_event",
    "validate_in_full",
]

log = logging.getLogger("ringfence.ingest")
ENVELOPE_TEXTS = ("event_id", "customer_id", "account_id", "source", "type")
INTERNAL = "this event could not be validated (an internal error, logged); it was not kept"
RESERVED = "is set by Ringfence (the amount in the reference currency, and the rate): a reserved name"

_envelope_decoder = msgspec.json.Decoder(Envelope)
_data_decoders = {name: msgspec.json.Decoder(cls) for name, cls in BUILTIN_TYPES.items()}
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_raw_decoder = msgspec.json.Decoder(msgspec.Raw)
_object_decoder = msgspec.json.Decoder(dict[str, Any])
_clean_name = functools.lru_cache(maxsize=4096)(clean)  # sources and types: few, and in every event
REFERENCE_ONLY = FxTable()  # no rates loaded: amounts in the reference currency convert, others are flagged


class MalformedBody(EventError):
    """The body as a whole is not JSON/NDJSON of events (nothing in it can be read)."""


class TooCostly(Exception):
    """Validating the body's events took more than its budget allowed beyond an ordinary event's
    time each (:data:`ORDINARY_EVENT_S`). Nothing of it is kept."""

    def __init__(self, costly_s: float, events: int) -> None:
        super().__init__(f"validating {events} events took {costly_s:.2f} s more than ordinary ones, over the budget")
        self.costly_s = costly_s
        self.events = events


# the CPU time validating an ordinary event may take (a valid one 10-50 us, a refused one about
# 100); what an event takes beyond it is charged to its producer (runtimes.ingest.ValidationBudget).
# Event by event: a cheap one lends nothing to a costly one (10,000 empty objects, refused in
# 40 us each, once lent 30 costly events of their body 2 s). CPU time: a busy machine does not
# make a body costly
ORDINARY_EVENT_S = 250e-6


def _charged(batch: _Outcome, spent: float, budget_s: float | None, events: int) -> None:
    """Add to ``batch.costly_s`` what validating an event took (``spent``, in thread CPU time)
    beyond an ordinary event's; TooCostly once that is over ``budget_s`` (None: no budget)."""
    batch.costly_s += max(0.0, spent - ORDINARY_EVENT_S)
    if budget_s is not None and batch.costly_s > budget_s:
        raise TooCostly(batch.costly_s, events)


class TooManyEvents(MalformedBody):
    """The body holds more events than one request may carry (HTTP 413 ``too_many_events``)."""

    def __init__(self, count: int, limit: int) -> None:
        self.count = count
        self.limit = limit
        super().__init__([FieldError("$", f"batch of {count} events exceeds the limit of {limit}")])


@dataclass(frozen=True)
class Rejection:
    """One event of a batch that failed validation."""

    index: int
    event_id: str | None
    errors: list[FieldError]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "event_id": self.event_id,
            "errors": [e.to_dict() for e in self.errors],
        }


_rejections_encoder = msgspec.json.Encoder()
_rejections_decoder = msgspec.json.Decoder(list[Rejection])


@dataclass(frozen=True)
class EncodedRejections(Sequence[Rejection]):
    """A body's rejections as the JSON of its answer's ``rejected``, made where the body was
    validated (the ingest worker process). The API process copies these bytes into the answer
    and reads them as :class:`Rejection` only when asked item by item: 10,000 rejections of 25
    fields each, sent as objects, took 0.9 s of the API process's GIL to unpickle (and a
    collection of 250,000 objects after), holding every other request (a hostile re-test)."""

    json: bytes
    total: int

    @classmethod
    def of(cls, rejected: list[Rejection]) -> EncodedRejections:
        """Answered as they are, never fitted to echo again: what :func:`decode_batch` rejects
        is redacted and made printable where it is made."""
        return cls(_rejections_encoder.encode(rejected), len(rejected))

    def answer(self) -> msgspec.Raw:
        """The answer's ``rejected``, as it is (a producer's fields are redacted when rejected)."""
        return msgspec.Raw(self.json)

    @functools.cached_property
    def _items(self) -> list[Rejection]:
        return _rejections_decoder.decode(self.json)

    def __len__(self) -> int:
        return self.total

    @overload
    def __getitem__(self, index: int) -> Rejection: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Rejection]: ...
    def __getitem__(self, index: int | slice) -> Rejection | Sequence[Rejection]:
        return self._items[index]


def rejections_answer(rejected: Sequence[Rejection]) -> Any:
    """The answer's ``rejected`` list (``POST /v1/events``)."""
    if isinstance(rejected, EncodedRejections):
        return rejected.answer()
    return [r.to_dict() for r in rejected]


@dataclass
class _Outcome:
    """What a body decoded to besides its events: their index in the body, the rejections."""

    indexes: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    fx_missing: dict[str, int] = field(default_factory=dict)  # events validated with no rate, by currency
    costly_s: float = 0.0  # validation time beyond an ordinary event's, event by event (ORDINARY_EVENT_S)

    @property
    def size(self) -> int:
        return len(self.indexes) + len(self.rejected)

    def validated(
        self,
        index: int,
        item: msgspec.Raw | FieldError,
        now: float,
        custom: frozenset[str],
        allowed: frozenset[str] | None,
        fx: FxTable,
    ) -> Event | None:
        """``item``'s event, counted, or None (its rejection noted)."""
        if isinstance(item, FieldError):
            self.rejected.append(Rejection(index, None, [item]))
            return None
        try:
            event = validate_event(item, now, custom, allowed, fx)
        except EventError as exc:
            self.rejected.append(Rejection(index, exc.event_id, exc.errors))
            return None
        except Exception as exc:  # a bug must cost this event only, never the batch or the worker
            log.error("event %d of a batch could not be validated:\n%s", index, redact(_trace(exc)))
            self.rejected.append(Rejection(index, None, [FieldError("$", INTERNAL)]))
            return None
        self.indexes.append(index)
        stamp = event.data.get("fx") if isinstance(event.data, dict) else None
        if isinstance(stamp, dict) and stamp.get("missing"):  # set by the stamp only (reserved)
            currency = event.data["currency"]  # a known ISO 4217 code: money is checked before
            self.fx_missing[currency] = self.fx_missing.get(currency, 0) + 1
        return event


@dataclass
class DecodedBatch(_Outcome):
    """What a body decoded to: valid events (with their index in the body) and rejections."""

    events: list[Event] = field(default_factory=list)


@dataclass
class StoredBatch(_Outcome):
    """:class:`DecodedBatch` with each valid event as a log stores it (:data:`StoredEvent`)."""

    events: list[StoredEvent] = field(default_factory=list)


def split_body(body: bytes, ndjson: bool, max_events: int | None = None) -> list[msgspec.Raw | FieldError]:
    """Cut a body into one raw JSON value per event (or the error for an unreadable line).

    Raises MalformedBody if a JSON body is not valid JSON or holds neither an object nor
    an array, TooManyEvents if it holds more than ``max_events`` (counted before decoding).
    """
    if ndjson:
        lines = [line for line in body.splitlines() if line.strip()]
        if max_events is not None and len(lines) > max_events:
            raise TooManyEvents(len(lines), max_events)
        items: list[msgspec.Raw | FieldError] = []
        for line in lines:
            try:
                items.append(_raw_decoder.decode(line))
            except DECODE_ERRORS as exc:
                items.append(FieldError("$", f"malformed JSON: {exc}"))
            except RecursionError:
                items.append(FieldError("$", TOO_DEEP))
        return items
    stripped = body.lstrip()
    try:
        if stripped.startswith(b"["):
            raws: list[msgspec.Raw | FieldError] = list(_raw_list_decoder.decode(body))
            if max_events is not None and len(raws) > max_events:
                raise TooManyEvents(len(raws), max_events)
            return raws
        if stripped.startswith(b"{"):
            return [_raw_decoder.decode(body)]
    except DECODE_ERRORS as exc:
        raise MalformedBody([FieldError("$", f"malformed JSON: {exc}")]) from None
    except RecursionError:
        raise MalformedBody([FieldError("$", TOO_DEEP)]) from None
    raise MalformedBody([FieldError("$", "expected a JSON object, a JSON array of objects, or NDJSON")])


def _echoed_event_id(values: dict[str, Any], faulty: set[str]) -> str | None:
    """The event_id a rejection may echo: None unless it passed validation, and None if it
    holds a card number (checked in full, never truncated first: a cut could split a PAN).
    An envelope that could not be read at all echoes nothing."""
    if "event_id" in faulty or not isinstance(values.get("event_id"), str):
        return None
    return echo(values["event_id"])


def _envelope(raw: bytes | msgspec.Raw) -> tuple[dict[str, Any], list[FieldError]]:
    """The envelope's fields that are valid, and an error for each one that is not."""
    try:
        env = _envelope_decoder.decode(raw)
    except DECODE_ERRORS:
        return decode_fields(Envelope, raw, "")
    except RecursionError:
        return {}, [FieldError("$", TOO_DEEP)]
    return msgspec.structs.asdict(env), []


def _data(type_: str, raw: msgspec.Raw, custom: Collection[str]) -> tuple[dict[str, Any], list[FieldError]]:
    """``data`` of a ``type_`` event as plain values, and the errors of its fields."""
    decoder = _data_decoders.get(type_)
    if decoder is not None:
        try:
            return msgspec.to_builtins(decoder.decode(raw)), []
        except DECODE_ERRORS:
            values, errors = decode_fields(BUILTIN_TYPES[type_], raw, "data")
            return msgspec.to_builtins(values), errors
        except RecursionError:
            return {}, [FieldError("data", TOO_DEEP)]
    if type_ not in custom:
        return {}, [FieldError("type", f"unknown event type {type_!r}")]  # a pattern-checked name
    try:
        return _object_decoder.decode(raw), []
    except DECODE_ERRORS as exc:
        return {}, field_errors(exc, "data")
    except RecursionError:
        return {}, [FieldError("data", TOO_DEEP)]


def _as_sent(raw: msgspec.Raw) -> Any:
    try:
        return msgspec.json.decode(raw)
    except (*DECODE_ERRORS, RecursionError):
        return None


def _envelope_errors(
    values: dict[str, Any], failed: set[str], now: float, sources: Collection[str] | None, texts_plain: bool
) -> list[FieldError]:
    """The envelope's faults beyond its fields' types; ``texts_plain``: its strings were found
    :func:`plain`, so they hold no character or card number to report."""
    errors: list[FieldError] = []
    occurred = values.get("occurred_at")
    if occurred is not None:
        at = occurred.timestamp()
        if at < MIN_OCCURRED_AT:
            errors.append(FieldError("occurred_at", "is before 2000-01-01"))
        elif at > now + MAX_FUTURE_SKEW_S:
            errors.append(FieldError("occurred_at", f"is more than {MAX_FUTURE_SKEW_S / 60:g} minutes in the future"))
    type_ = values.get("type")
    needs_customer = type_ is not None and type_ not in CUSTOMERLESS_TYPES
    if values.get("customer_id") is None and "customer_id" not in failed and needs_customer:
        errors.append(FieldError("customer_id", "is required for this event type"))
    source = values.get("source")
    if sources is not None and source is not None and source not in sources:
        allowed = ", ".join(sorted(sources)) or "none"
        errors.append(FieldError("source", f"this API key may only send events of the source(s): {allowed}"))
    for name in () if texts_plain else ENVELOPE_TEXTS:
        value = values.get(name)
        if not isinstance(value, str):
            continue
        fault = envelope_fault(value)
        if fault is not None:
            errors.append(FieldError(name, fault))
        problem = (_clean_name if name in ("source", "type") else clean)(value)[1]
        if problem is not None:
            errors.append(FieldError(name, problem))
    return errors


def validate_event(
    raw: bytes | msgspec.Raw,
    now: float,
    custom_types: Collection[str] = (),
    sources: Collection[str] | None = None,
    fx: FxTable = REFERENCE_ONLY,
) -> Event:
    """Validate one event's JSON and return it normalised, masked and PAN-free, its money
    also in the reference currency at ``fx``'s rate (:meth:`FxTable.stamp`).

    ``sources``: the sources the producer's key may write (None: any). Raises EventError
    listing every field at fault; its ``event_id`` is None if that id failed validation or
    holds a card number.
    """
    event = fast_event(raw, now, sources, fx)
    if event is not None:  # nearly every event: the compiled core found it certainly valid
        return event
    return validate_in_full(raw, now, custom_types, sources, fx)


DUPLICATE_MESSAGE = "given twice in one object: send each field once"
MAX_DUPLICATES_NAMED = 20


class _Pairs(list[tuple[str, Any]]):
    """An object's members as the JSON holds them, repeated names included."""


def duplicate_fields(raw: bytes | msgspec.Raw) -> list[FieldError]:
    """A field named twice in one object of ``raw``: a reader taking the first copy (a gateway,
    a firewall) and one taking the last (msgspec, here) would see two events, and a card number
    in the copy not kept would never be scanned. Only events the compiled core is not certain
    of come here (it declines duplicates), so the second parse costs the fast path nothing."""
    try:
        doc = json.loads(raw if isinstance(raw, bytes | str) else bytes(raw), object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):  # not JSON, or too deep: the decoder says what is wrong
        return []
    found: list[FieldError] = []
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack and len(found) < MAX_DUPLICATES_NAMED:
        node, path = stack.pop()
        if isinstance(node, _Pairs):
            seen: set[str] = set()
            for name, value in node:
                where = f"{path}.{name}" if path else name
                if name in seen:
                    found.append(FieldError(printable(redact(where)), DUPLICATE_MESSAGE))
                seen.add(name)
                stack.append((value, where))
        elif isinstance(node, list):
            stack += [(item, f"{path}[{i}]") for i, item in enumerate(node)]
    return found


def validate_in_full(
    raw: bytes | msgspec.Raw,
    now: float,
    custom_types: Collection[str] = (),
    sources: Collection[str] | None = None,
    fx: FxTable = REFERENCE_ONLY,
) -> Event:
    """:func:`validate_event` without the compiled core's fast path: its specification, and
    what decides every event the fast path is not certain of."""
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError([FieldError("$", f"event is larger than {MAX_EVENT_BYTES} bytes")])
    values, errors = _envelope(raw)
    errors = duplicate_fields(raw) + errors
    # nearly every event: the compiled core finds its strings plain, and the scans are skipped
    texts_plain = not errors and plain([values.get(name) for name in ENVELOPE_TEXTS])
    errors += _envelope_errors(values, {e.field for e in errors}, now, sources, texts_plain)
    data: Any = {}
    type_, data_raw = values.get("type"), values.get("data")
    known_keys = type_ in BUILTIN_TYPES
    if type_ is not None and data_raw is not None:
        data, data_errors = _data(type_, data_raw, custom_types)
        errors += data_errors
        errors += normalise_data(data, {e.field for e in errors})
        if data_errors and known_keys:  # scan what was sent, not only what decoded
            data, known_keys = _as_sent(data_raw), False
        if isinstance(data, dict) and not known_keys:  # a built-in type's struct refuses them already
            errors += [FieldError(f"data.{name}", RESERVED) for name in STAMPED if name in data]
    if errors or not plain(data):
        data = _scanned(data, errors, keys=not known_keys)
    if errors:
        event_id = _echoed_event_id(values, {e.field for e in errors})
        unique = dict.fromkeys(FieldError(printable(redact(e.field)), printable(redact(e.message))) for e in errors)
        raise EventError(list(unique), event_id)
    if isinstance(data, dict):  # after the scans: a converted amount is no producer's text
        fx.stamp(data, now)
    account = values.get("account_id")
    customer = values.get("customer_id")
    mask = _as_is if texts_plain else mask_ibans
    return Event(
        event_id=mask(values["event_id"]),
        type=values["type"],
        occurred_at=values["occurred_at"].timestamp(),
        source=values["source"] if texts_plain else _clean_name(values["source"])[0],
        data=data,
        customer_id=mask(customer) if customer is not None else None,
        account_id=mask(account) if account is not None else None,
    )


def _scanned(data: Any, errors: list[FieldError], *, keys: bool) -> Any:
    """``data`` scanned (:func:`scan`), its IP address (``data.ip``, checked as one) kept as sent:
    an IPv6 address's groups can spell a card number or an IBAN by chance (about one random
    address in 1,500), and refusing or masking it would lose the event's detections by address.
    Its zone (``%...``) is text, and scanned. Only there: elsewhere, text that reads as an IPv6
    address may spell a card number on purpose (``4111:1111:1111:1111::``)."""
    parts = address_and_zone(data.get(IP_FIELD)) if isinstance(data, dict) else None
    if parts is None:
        return scan(data, "data", errors, keys=keys)
    address, zone = parts
    scanned = scan({**data, IP_FIELD: zone}, "data", errors, keys=keys)
    scanned[IP_FIELD] = f"{address}%{scanned[IP_FIELD]}" if zone else address
    return scanned


def _as_is(text: str) -> str:
    return text


def decode_batch(
    body: bytes,
    *,
    ndjson: bool,
    now: float,
    max_events: int,
    custom_types: Iterable[str] = (),
    sources: Collection[str] | None = None,
    fx: FxTable = REFERENCE_ONLY,
    budget_s: float | None = None,
) -> DecodedBatch:
    """Decode and validate every event of a request body (money converted at ``fx``).

    ``sources``: the sources the producer's key may write (None: any). Raises MalformedBody
    if the body cannot be read at all, TooManyEvents if it holds more than ``max_events``,
    TooCostly once its events took ``budget_s`` longer to validate than ordinary ones (each
    beyond :data:`ORDINARY_EVENT_S`).
    """
    items = _items(body, ndjson, max_events)
    custom, allowed = frozenset(custom_types), _allowed(sources)
    batch = DecodedBatch()
    last = time.thread_time()  # one clock read an event: each event's time runs from the one before
    for index, item in enumerate(items):
        if (event := batch.validated(index, item, now, custom, allowed, fx)) is not None:
            batch.events.append(event)
        done = time.thread_time()
        _charged(batch, done - last, budget_s, index + 1)
        last = done
    return batch


def decode_stored_batch(
    body: bytes,
    *,
    ndjson: bool,
    now: float,
    max_events: int,
    partitions: int,
    stored_form: Callable[[Event, int], StoredEvent],
    custom_types: Iterable[str] = (),
    sources: Collection[str] | None = None,
    fx: FxTable = REFERENCE_ONLY,
    budget_s: float | None = None,
) -> StoredBatch:
    """:func:`decode_batch`, each event as a log of ``partitions`` stores it: what the compiled
    core can make of nearly every event in one call (:func:`fast_stored`), the others as
    :func:`validate_event` and ``stored_form`` make them. ``stored_form`` is the log's
    ``ringfence.log.base.stored_event`` (handed in: events sit below the log), whose partition
    the core computes alike."""
    items = _items(body, ndjson, max_events)
    custom, allowed = frozenset(custom_types), _allowed(sources)
    batch = StoredBatch()
    for index, (item, stored) in enumerate(zip(items, fast_stored(items, now, allowed, fx, partitions), strict=True)):
        if stored is not None:
            batch.indexes.append(index)
            batch.events.append(stored)
        else:  # the core's events cost next to nothing: only these are worth a clock read
            started = time.thread_time()
            if (event := batch.validated(index, item, now, custom, allowed, fx)) is not None:
                batch.events.append(stored_form(event, partitions))
            _charged(batch, time.thread_time() - started, budget_s, index + 1)
    return batch


def _items(body: bytes, ndjson: bool, max_events: int) -> list[msgspec.Raw | FieldError]:
    items = split_body(body, ndjson, max_events)
    if not items:
        raise MalformedBody([FieldError("$", "no events in body")])
    return items


def _allowed(sources: Collection[str] | None) -> frozenset[str] | None:
    return frozenset(sources) if sources is not None else None


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))
